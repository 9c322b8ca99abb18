"""Print the sr_afhq table of finished runs and write table.md / table.csv next to them.

python experiments/paper_tables/sr_afhq/table.py --small      # outputs/paper_tables/sr_afhq/small
python experiments/paper_tables/sr_afhq/table.py              # outputs/paper_tables/sr_afhq/full
python experiments/paper_tables/sr_afhq/table.py --out DIR    # runs elsewhere
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # this checkout's ccdf, installed or not

from ccdf.tables import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["show", "sr_afhq", *sys.argv[1:]]))
