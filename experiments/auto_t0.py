"""`sampler.t0=auto` against fixed start times on the embedded models (issue #6, item 5).

    python experiments/auto_t0.py            # 14 minutes on 2 busy CPU cores (results cached for re-runs)
    python experiments/auto_t0.py --only inpaint sr4

For each setting (all on a 100-step grid, N = 100, so N' = 100 t0; the Gaussian prior of
model=gaussian on the 4 bundled faces at 256x256 or the knee slice, the learned demo prior at
128x128) it runs `run.py` twice on the bundled evaluation images: once with the fixed
t0 in {0.05, 0.1, 0.2, 0.5} in one batched pass (`eval.t0s`), once with `sampler.t0=auto`, which
estimates the initializer's error and the posterior variance on the calibration split (the data
set's prior images, never the evaluation images; posterior samples on a 20-step grid) and picks the
MSE-optimal t0 of the closed form (docs/theory.md). It prints a Markdown table (PSNR / SSIM, mean
over images, with the NFE) and writes it to outputs/auto_t0/table.md (rows also as table.json). The
per-image results are cached in outputs/auto_t0/cache, so a second invocation only gathers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "auto_t0"
FIXED = (0.05, 0.1, 0.2, 0.5)
# posterior samples for the estimate on a 20-step grid (a coarse grid is enough for a variance)
COMMON = ["eval.fid=false", "eval.lpips=false", "auto_t0.estimate_steps=20", f"eval.cache_dir={OUT / 'cache'}"]
SETTINGS = {  # name: (description, overrides); every setting on a 100-step grid (N = 100) to fit in minutes
    "inpaint": ("inpaint, 70% random pixels, zero-fill, Gaussian prior", ["task=inpaint", "sampler.num_steps=100"]),
    "inpaint_box": (
        "inpaint, 128x128 box, zero-fill, Gaussian prior",
        ["task=inpaint", "operator=inpaint_box", "sampler.num_steps=100"],
    ),
    "sr4": ("sr4, bicubic start, Gaussian prior", ["task=sr4", "sampler.num_steps=100"]),
    "mri": ("mri x4, zero-filled, Gaussian prior, VE-PC", ["task=mri"]),
    "demo_inpaint": (
        "inpaint 128px, zero-fill, demo UNet prior",
        ["task=inpaint", "model=demo_prior", "dataset=samples_crops", "sampler.num_steps=100"],
    ),
    "demo_sr4": (
        "sr4 128px, bicubic start, demo UNet prior",
        ["task=sr4", "model=demo_prior", "dataset=samples_crops", "sampler.num_steps=100"],
    ),
}


def run(overrides: list[str], out: Path) -> float:
    """``python run.py`` with the overrides into ``out`` (replaced); returns the wall time."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "run.py"), *overrides, *COMMON, f"hydra.run.dir={out}"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - tic


def metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def evaluate(name: str) -> dict:
    desc, overrides = SETTINGS[name]
    fixed_dir, auto_dir = OUT / "runs" / f"{name}_fixed", OUT / "runs" / f"{name}_auto"
    t_fixed = run([*overrides, f"eval.t0s=[{','.join(f'{t:g}' for t in FIXED)}]"], fixed_dir)
    t_auto = run([*overrides, "sampler.t0=auto"], auto_dir)
    fixed = {t: metrics(fixed_dir / f"t0={t:g}" / "metrics.json") for t in FIXED}
    auto = metrics(auto_dir / "metrics.json")
    row = {
        "name": name,
        "setting": desc,
        "overrides": overrides,
        "auto": {k: auto[k] for k in ("t0", "reverse_steps", "nfe", "psnr", "ssim", "init_psnr", "init_ssim")},
        "estimates": auto["auto_t0"],
        "fixed": {f"{t:g}": {k: m[k] for k in ("reverse_steps", "nfe", "psnr", "ssim")} for t, m in fixed.items()},
        "seconds": {"fixed_run": round(t_fixed, 1), "auto_run": round(t_auto, 1)},
    }
    best = max(fixed.items(), key=lambda kv: kv[1]["psnr"])
    row["best_fixed"] = {"t0": best[0], "psnr": best[1]["psnr"]}
    a = row["auto"]
    print(
        f"{name}: auto t0 {a['t0']:g} PSNR {a['psnr']:.2f} | "
        + " | ".join(f"{t:g}: {m['psnr']:.2f}" for t, m in fixed.items())
        + f" | {t_fixed + t_auto:.0f} s",
        flush=True,
    )
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| setting | auto t0 (N', NFE) | init MSE / post. var. per pixel (source) | auto PSNR / SSIM | "
        + " | ".join(f"t0 = {t:g}" for t in FIXED)
        + " | initializer |\n|---|---|---|---|"
        + "---|" * len(FIXED)
        + "---|\n"
    )
    body = ""
    for r in rows:
        a, e = r["auto"], r["estimates"]
        src = "calibration" if set(e["source"].values()) == {"calibration"} else ", ".join(e["source"].values())
        helps = "" if e["helps"] else "; no help predicted"
        cells = [
            r["setting"],
            f"**{a['t0']:g}** ({a['reverse_steps']}, {a['nfe']:g}{helps})",
            f"{e['init_mse']:.3g} / {e['post_var']:.3g} ({src}, {e['calib_images']} images)",
            f"**{a['psnr']:.2f}** / {a['ssim']:.4f}",
            *(f"{m['psnr']:.2f} / {m['ssim']:.4f} ({m['nfe']:g})" for m in (r["fixed"][f"{t:g}"] for t in FIXED)),
            f"{a['init_psnr']:.2f} / {a['init_ssim']:.4f}",
        ]
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), help="settings to run (default: all)")
    args = parser.parse_args(argv)
    names = args.only or list(SETTINGS)
    tic = time.perf_counter()
    rows = [evaluate(name) for name in names]
    total = time.perf_counter() - tic
    md = (
        table(rows)
        + "\nPSNR (dB) / SSIM, mean over the bundled evaluation images; NFE in brackets; N = 100 steps. "
        + f"{total:.0f} s in all.\n"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "table.md").write_text(md)
    (OUT / "table.json").write_text(json.dumps({"rows": rows, "seconds": round(total, 1)}, indent=2) + "\n")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
