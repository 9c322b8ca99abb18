"""Measured contraction of one CCDF step for the learned demo prior and the Gaussian prior (issue #15, item 1).

    python experiments/contraction.py                 # ~2 minutes on 2 CPU cores (float64, 2 images)
    python experiments/contraction.py --every 5 --iters 40 --images 4

The same measurement as ``python run.py task=theory`` (theory.json's ``contraction``, ~1 minute with one image
in float32), with more images and iterations: :mod:`ccdf.theory.report.measured` says what is measured. Writes
experiments/results/contraction.{json,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

from ccdf.theory.report.measured import measured_contraction, write_figure

OUT = Path(__file__).resolve().parents[1] / "experiments" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="measure every k-th level (and the last)")
    parser.add_argument("--iters", type=int, default=25, help="power iterations per measurement (at most)")
    parser.add_argument("--tol", type=float, default=1e-5, help="stop when the estimate changes less (relative)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    args = parser.parse_args()
    result = measured_contraction(
        num_steps=args.num_steps, every=args.every, iters=args.iters, tol=args.tol, images=args.images,
        double=not args.float32, progress=print,
    )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "contraction.json").write_text(json.dumps(result, indent=1) + "\n")
    matplotlib.use("Agg")
    write_figure(result, OUT / "contraction.png", dpi=120)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
