"""The math packages import without Hydra, OmegaConf or Lightning (the style guide's boundary)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.e2e  # a fresh interpreter per import check (make test-e2e)
def test_library_does_not_import_frameworks():
    code = (
        "import sys\n"
        "import ccdf.sampling, ccdf.operators, ccdf.schedules, ccdf.denoisers, ccdf.initializers, ccdf.metrics, ccdf.data\n"
        "import ccdf.checkpoints, ccdf.checkpoints.cli, ccdf.checkpoints.saving, ccdf.nets.guided_unet\n"
        "bad = [m for m in ('hydra', 'omegaconf', 'lightning', 'pytorch_lightning', 'wandb') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
