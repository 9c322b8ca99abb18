#!/usr/bin/env bash
# The paper's table: super-resolution x4 / x8 / x16 on AFHQ-dog 256 (conf/experiment/sr_afhq{,_small}.yaml).
#   experiments/paper_tables/sr_afhq/run.sh --small               # CPU, embedded model (minutes)
#   experiments/paper_tables/sr_afhq/run.sh dataset.root=/data/afhq/val/dog   # the paper's scale (GPU)
#   experiments/paper_tables/sr_afhq/run.sh --small --dry-run     # print the run.py -m commands only
# Each row is one `python run.py -m experiment=sr_afhq[_small] ...` into outputs/paper_tables/sr_afhq/<small|full>/<row>/;
# then the table (table.md, table.csv there) is printed. Extra arguments are Hydra overrides for every row.
# Rows, columns and labels: ccdf/tables.py (TABLES["sr_afhq"]).
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec python -m ccdf.tables run sr_afhq "$@"
