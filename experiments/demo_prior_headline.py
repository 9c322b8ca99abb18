"""The paper's headline with the shipped demo prior, on CPU: at the same 20 network evaluations,
CCDF started from the initializer beats sampling from pure noise.

    python experiments/demo_prior_headline.py            # about 2 minutes on 2 CPU cores

For each task it runs `run.py` twice on the 4 held-out bundled faces at 128x128
(dataset=samples_crops): CCDF with t0 = 0.2 on a 100-step grid (N' = 20) from the task's
initializer, and the full sampler from pure noise on a 20-step grid (t0 = 1, x_init = 0).
It prints a Markdown table of PSNR / SSIM (mean over images) with the NFE of every row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["model=demo_prior", "dataset=samples_crops"]
RUNS = {
    "CCDF, t0 = 0.2 (N' = 20 of 100)": ["sampler.t0=0.2", "sampler.num_steps=100"],
    "from noise (20 steps)": ["sampler.t0=1", "sampler.num_steps=20", "initializer=zero"],
}
TASKS = {"sr4": [], "inpaint": []}


def run(task: str, overrides: list[str], out: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "run.py"), f"task={task}", *COMMON, *overrides, f"hydra.run.dir={out}"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, extra in TASKS.items():
            for name, overrides in RUNS.items():
                m = run(task, extra + overrides, Path(tmp) / f"{task}_{len(rows)}")
                rows.append((task, name, m))
                print(f"{task:8s} {name:34s} NFE {m['nfe']:4.0f}  PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.4f}"
                      f"  (initializer {m['init_psnr']:.2f} / {m['init_ssim']:.4f})", flush=True)  # fmt: skip
    print("\n| task | sampler | NFE | PSNR (dB) | SSIM | initializer PSNR / SSIM |\n|---|---|---|---|---|---|")
    for task, name, m in rows:
        print(f"| {task} | {name} | {m['nfe']:.0f} | {m['psnr']:.2f} | {m['ssim']:.4f} | "
              f"{m['init_psnr']:.2f} / {m['init_ssim']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
