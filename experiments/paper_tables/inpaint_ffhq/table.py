"""Print the inpaint_ffhq table of finished runs and write table.md / table.csv next to them.

python experiments/paper_tables/inpaint_ffhq/table.py --small      # outputs/paper_tables/inpaint_ffhq/small
python experiments/paper_tables/inpaint_ffhq/table.py              # outputs/paper_tables/inpaint_ffhq/full
python experiments/paper_tables/inpaint_ffhq/table.py --out DIR    # runs elsewhere
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # this checkout's ccdf, installed or not

from ccdf.tables import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["show", "inpaint_ffhq", *sys.argv[1:]]))
