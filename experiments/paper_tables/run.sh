#!/usr/bin/env bash
# The paper's tables (experiments/paper_tables/README.md): TABLE is sr_ffhq, sr_afhq, inpaint_ffhq or mri_knee.
#   experiments/paper_tables/run.sh TABLE --small                  # every row on the CPU (embedded models), then the table
#   experiments/paper_tables/run.sh TABLE dataset.root=/data/...   # the paper's scale (GPU, checkpoints in checkpoints/)
#   experiments/paper_tables/run.sh TABLE --small --dry-run        # print the run.py -m command of every row only
#   experiments/paper_tables/run.sh TABLE --show [--small]         # only the table of finished runs (table.md / .csv)
# Runs go to outputs/paper_tables/TABLE/<small|full>/<row>/ (--out DIR elsewhere); other arguments are Hydra
# overrides for every row. Rows, columns and labels: the paper_table node of conf/experiment/TABLE[_small].yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: experiments/paper_tables/run.sh TABLE [--small] [--dry-run | --show] [--out DIR] [overrides...]" >&2
  exit 2
fi
table=$1
shift
action=run
args=()
for arg in "$@"; do
  if [ "$arg" = --show ]; then action=show; else args+=("$arg"); fi
done
exec python -m ccdf.tables "$action" "$table" ${args[@]+"${args[@]}"}
