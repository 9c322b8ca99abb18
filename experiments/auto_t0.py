"""`sampler.t0=auto` against fixed start times on the embedded models (issue #6, item 5).

    python experiments/auto_t0.py            # minutes on 2 CPU cores (results cached for re-runs)
    python experiments/auto_t0.py --only inpaint sr4
    python experiments/auto_t0.py --fine --only inpaint inpaint_box sr4 demo_inpaint demo_inpaint_box demo_sr4
        # the regret table (issue 15, item 3): auto against the best t0 of the fine grid FINE

For each setting (all on a 100-step grid, N = 100, so N' = 100 t0; the Gaussian prior of
model=gaussian on the 4 bundled faces at 256x256 or the knee slice, the learned demo prior at
128x128) it runs `run.py` twice on the bundled evaluation images: once with the fixed
t0 in {0.05, 0.1, 0.2, 0.5} in one batched pass (`eval.t0s`), once with `sampler.t0=auto`, which
estimates the initializer's error and the posterior variance on the calibration split (the data
set's prior images, never the evaluation images; posterior samples on a 20-step grid) and picks the
MSE-optimal t0 of the closed form (docs/theory.md). It prints a Markdown table (PSNR / SSIM, mean
over images, with the NFE) and writes it to outputs/auto_t0/table.md (rows also as table.json). The
per-image results are cached in outputs/auto_t0/cache, so a second invocation only gathers.

With ``--fine`` the fixed pass uses the fine grid FINE (11 start times, 222 network evaluations per
image) and the script reports the **regret** of auto: the best grid t0's mean PSNR minus auto's
(positive: auto loses), and the same against each image's own best grid t0 (an oracle that no
rule can beat), in experiments/results/auto_t0_regret.{md,json}: the six settings above (not mri) take
13 minutes on an otherwise idle 2-core CPU. ``--max-images`` limits every setting to its first images.
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
FINE = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.14, 0.2, 0.3, 0.5, 0.8)
RESULTS = ROOT / "experiments" / "results"
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
    "demo_inpaint_box": (
        "inpaint 128px, 64x64 box, zero-fill, demo UNet prior",
        [
            "task=inpaint",
            "operator=inpaint_box",
            "operator.box_size=64",
            "model=demo_prior",
            "dataset=samples_crops",
            "sampler.num_steps=100",
        ],
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


def evaluate(name: str, grid: tuple[float, ...] = FIXED, extra: tuple[str, ...] = ()) -> dict:
    desc, overrides = SETTINGS[name]
    overrides = [*overrides, *extra]
    tag = "_fine" if grid != FIXED else ""
    fixed_dir, auto_dir = OUT / "runs" / f"{name}_fixed{tag}", OUT / "runs" / f"{name}_auto"
    t_fixed = run([*overrides, f"eval.t0s=[{','.join(f'{t:g}' for t in grid)}]"], fixed_dir)
    t_auto = run([*overrides, "sampler.t0=auto"], auto_dir)
    fixed = {t: metrics(fixed_dir / f"t0={t:g}" / "metrics.json") for t in grid}
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
    # per image: the best grid t0 of each image (an oracle), by the image's name
    per_t0 = {t: {r["name"]: r["psnr"] for r in m["per_image"]} for t, m in fixed.items()}
    names = sorted(per_t0[grid[0]])
    oracle = sum(max(per_t0[t][n] for t in grid) for n in names) / len(names)
    row["regret_db"] = best[1]["psnr"] - auto["psnr"]
    row["oracle_psnr"] = oracle
    row["oracle_regret_db"] = oracle - auto["psnr"]
    row["images"] = len(names)
    a = row["auto"]
    print(
        f"{name}: auto t0 {a['t0']:g} PSNR {a['psnr']:.2f} | "
        + " | ".join(f"{t:g}: {m['psnr']:.2f}" for t, m in fixed.items())
        + f" | {t_fixed + t_auto:.0f} s",
        flush=True,
    )
    return row


def regret_table(rows: list[dict]) -> str:
    head = (
        "| setting | images | auto t0 | auto PSNR | best grid t0 | best grid PSNR | regret (dB) | "
        "per-image oracle PSNR | regret vs oracle (dB) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    body = ""
    for r in rows:
        a, b = r["auto"], r["best_fixed"]
        body += (
            f"| {r['setting']} | {r['images']} | {a['t0']:g} | {a['psnr']:.2f} | {b['t0']:g} | {b['psnr']:.2f} | "
            f"**{r['regret_db']:+.2f}** | {r['oracle_psnr']:.2f} | {r['oracle_regret_db']:+.2f} |\n"
        )
    return head + body


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
    parser.add_argument("--fine", action="store_true", help="fixed pass on the fine grid FINE; regret table")
    parser.add_argument("--max-images", type=int, default=None, help="first images of every setting only")
    args = parser.parse_args(argv)
    names = args.only or list(SETTINGS)
    extra = () if args.max_images is None else (f"dataset.max_images={args.max_images}",)
    grid = FINE if args.fine else FIXED
    tic = time.perf_counter()
    rows = []
    for name in names:
        rows.append(evaluate(name, grid, extra))
        if args.fine:  # write after every setting: a long run leaves its finished rows behind
            write_regret(rows, time.perf_counter() - tic)
    total = time.perf_counter() - tic
    if args.fine:
        print("\n" + write_regret(rows, total))
        return 0
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


def write_regret(rows: list[dict], seconds: float) -> str:
    """Write the regret table; rows of other settings from an earlier invocation are kept (by name)."""
    old = RESULTS / "auto_t0_regret.json"
    kept = json.loads(old.read_text())["rows"] if old.exists() else []
    fresh = {r["name"] for r in rows}
    order = list(SETTINGS)
    rows = sorted([r for r in kept if r["name"] not in fresh] + rows, key=lambda r: order.index(r["name"]))
    md = (
        regret_table(rows)
        + f"\nPSNR (dB), mean over the images; grid t0 in {list(FINE)} on N = 100 steps; regret = best grid PSNR "
        + f"- auto PSNR (positive: auto loses). Last invocation: {seconds:.0f} s.\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "auto_t0_regret.md").write_text(md)
    payload = {"grid": list(FINE), "rows": rows, "seconds": round(seconds, 1)}
    (RESULTS / "auto_t0_regret.json").write_text(json.dumps(payload, indent=2) + "\n")
    return md


if __name__ == "__main__":
    sys.exit(main())
