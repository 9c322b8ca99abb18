#!/usr/bin/env bash
# The GPU speed sweep of README "Speed" (< 8 minutes on one H200), one JSON file:
#   FFHQ-256 guided UNet (official architecture, random weights) at batch 1, 16, 64 in fp32, bf16 and
#   bf16 + torch.compile: ms per image-NFE, loop overhead against bare forwards, peak memory;
#   DPS (backward through the net) at batch 1 and 16; projected wall time of 1000 x8-SR images at 20 NFE.
#
#   bash experiments/device_bench.sh                      # on the GPU -> experiments/results/bench/device.json
#   bash experiments/device_bench.sh --tiny               # the same sweep, tiny, on the CPU (tests/test_speed.py)
#   bash experiments/device_bench.sh --json out.json      # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
DEVICE=cuda
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) ARGS+=(--tiny); DEVICE=cpu; shift ;;
    --json) ARGS+=(--json "$2"); shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    *) echo "unknown argument $1 (use --tiny, --json PATH, --device DEV)" >&2; exit 2 ;;
  esac
done
exec "$PYTHON" experiments/bench_sampling.py --suite device --device "$DEVICE" "${ARGS[@]}"
