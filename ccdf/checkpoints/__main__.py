"""``python -m ccdf.checkpoints PATH [PATH ...]``: inspect checkpoint files (see :mod:`ccdf.checkpoints.cli`)."""

import sys

from ccdf.checkpoints.cli import main

sys.exit(main())
