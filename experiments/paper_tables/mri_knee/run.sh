#!/usr/bin/env bash
# The paper's table: compressed-sensing MRI x4 / x8 on fastMRI knee (conf/experiment/mri_knee{,_small}.yaml).
#   experiments/paper_tables/mri_knee/run.sh --small               # CPU, embedded model (minutes)
#   experiments/paper_tables/mri_knee/run.sh dataset.root=/data/fastmri/singlecoil_val   # the paper's scale (GPU)
#   experiments/paper_tables/mri_knee/run.sh --small --dry-run     # print the run.py -m commands only
# Each row is one `python run.py -m experiment=mri_knee[_small] ...` into outputs/paper_tables/mri_knee/<small|full>/<row>/;
# then the table (table.md, table.csv there) is printed. Extra arguments are Hydra overrides for every row.
# Rows, columns and labels: ccdf/tables.py (TABLES["mri_knee"]).
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec python -m ccdf.tables run mri_knee "$@"
