"""Every solver from noise and with CCDF's warm start, on the embedded priors (issue #11, item 3).

    python experiments/solvers_warm_start.py                  # ~15 minutes on 2 CPU cores
    python experiments/solvers_warm_start.py --priors gaussian --tasks sr4

For each prior (the Gaussian prior of ``model=gaussian`` at 256x256; the learned demo prior
``model=demo_prior`` at 64x64), task (``sr4``; ``inpaint``: 70% random pixels missing;
``inpaint_box``: a centred box) and solver (``sampler=<name>``, the configs in conf/sampler/) it
runs, on the 4 bundled evaluation faces:

- from noise with N = 100 and with N = 20 (t0 = 1, x_init = 0);
- the warm start at 20 NFE: t0 = 0.2 of N = 100, from the task's initializer;
- ``sampler.t0=auto`` (N = 100) for the solvers the theory covers (DDPM, DDIM).

Each run is built from the same Hydra configs as ``run.py`` (``ccdf.app.build``); the official
task-specific settings are applied: DPS scale 0.3 (SR) / 0.5 (inpainting), DiffPIR zeta 0.25 (SR) /
1.0 (inpainting). It prints a Markdown table (PSNR, SSIM, counted NFE, seconds) and writes it to
experiments/results/solvers_warm_start.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from ccdf.app import build, resolve_auto_t0
from ccdf.data.datasets import stack_images
from ccdf.denoisers.base import CountingDenoiser
from ccdf.evaluation import score_item
from ccdf.operators.base import measure
from ccdf.utils.rng import per_sample_generators

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results"
PRIORS = {
    "gaussian": ["model=gaussian", "dataset=samples", "dataset.size=256"],
    "demo_prior": ["model=demo_prior", "dataset=samples_crops", "dataset.size=64"],
}
TASKS = {"sr4": ["task=sr4"], "inpaint": ["task=inpaint"], "inpaint_box": ["task=inpaint", "operator=inpaint_box"]}
SOLVERS = ["ddpm", "ddim", "dpmpp_2m", "dps", "pigdm", "ddnm", "diffpir"]
THEORY_COVERS = {"ddpm", "ddim"}


def official_settings(solver: str, task: str) -> list[str]:
    """The authors' per-task settings (see conf/sampler/<solver>.yaml)."""
    sr = task.startswith("sr")
    if solver == "dps":
        return [f"sampler.dc.scale={0.3 if sr else 0.5}"]
    if solver == "diffpir":
        return [f"sampler.solver.zeta={0.25 if sr else 1.0}"]
    return []


def sampler_file(solver: str) -> str:
    return "ccdf" if solver == "ddpm" else solver


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


def box_overrides(task_overrides: list[str], size: int) -> list[str]:
    """A centred box of half the image side for inpaint_box."""
    if "operator=inpaint_box" not in task_overrides:
        return task_overrides
    return [*task_overrides, f"operator.box_size={size // 2}"]


def evaluate(comps, sampler, x0, t0: float, from_noise: bool, seed: int = 0) -> dict:
    """Measure, initialise (or start from zeros), sample, score: mean PSNR/SSIM, counted NFE, seconds."""
    index = list(range(x0.shape[0]))
    gens = per_sample_generators(seed, index)
    y = measure(comps.operator, x0, 0.0, gens)
    x_init = torch.zeros_like(x0) if from_noise else comps.initializer(y, comps.operator)
    counter = CountingDenoiser(comps.denoiser)
    tic = time.perf_counter()
    x = sampler(counter, comps.schedule, comps.operator, y, x_init, t0=t0, generator=gens)
    seconds = time.perf_counter() - tic
    rows = [score_item(x[b : b + 1], x_init[b : b + 1], x0[b : b + 1], y[b : b + 1], comps.operator, False)
            for b in index]  # fmt: skip
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {"psnr": mean("psnr"), "ssim": mean("ssim"), "init_psnr": mean("init_psnr"),
            "nfe": sum(counter.per_item) / len(index), "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--solvers", nargs="+", default=SOLVERS, choices=SOLVERS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for prior in args.priors:
        size = int(PRIORS[prior][-1].split("=")[1])
        for task in args.tasks:
            task_ov = box_overrides(TASKS[task], size)
            base = compose_cfg([*task_ov, *PRIORS[prior]])
            comps = build(base)
            x0 = stack_images(comps.dataset)
            for solver in args.solvers:
                extra = [f"sampler={sampler_file(solver)}", *official_settings(solver, task)]
                runs = {"noise, N = 100": (100, 1.0, True), "noise, N = 20": (20, 1.0, True),
                        "warm start, t0 = 0.2 of 100": (100, 0.2, False)}  # fmt: skip
                if solver in THEORY_COVERS:
                    runs["warm start, t0 = auto (N = 100)"] = (100, "auto", False)
                for mode, (num_steps, t0, noise) in runs.items():
                    cfg = compose_cfg([*task_ov, *PRIORS[prior], *extra, f"sampler.num_steps={num_steps}",
                                       f"sampler.t0={t0}", "auto_t0.estimate_steps=20"])  # fmt: skip
                    if t0 == "auto":
                        resolve_auto_t0(cfg, comps)
                        t0 = float(cfg.sampler.t0)
                    sampler = instantiate(cfg.sampler, _convert_="all")
                    res = evaluate(comps, sampler, x0, float(t0), noise)
                    row = {"prior": prior, "task": task, "solver": solver, "mode": mode, "t0": float(t0), **res}
                    rows.append(row)
                    print(
                        f"{prior:10s} {task:11s} {solver:9s} {mode:32s} t0 {float(t0):.3g}  NFE {res['nfe']:5.1f}  "
                        f"PSNR {res['psnr']:6.2f}  SSIM {res['ssim']:.4f}  ({res['seconds']:.1f} s)",
                        flush=True,
                    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "solvers_warm_start.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = render(rows)
    (OUT / "solvers_warm_start.md").write_text(table)
    print("\n" + table)


def render(rows: list[dict]) -> str:
    """One Markdown table per prior and task: solvers as rows, modes as columns (PSNR / SSIM, NFE)."""
    lines = ["Regenerate: `python experiments/solvers_warm_start.py` (mean over the 4 bundled faces, noiseless y).", ""]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    for prior in dict.fromkeys(r["prior"] for r in rows):
        for task in dict.fromkeys(r["task"] for r in rows if r["prior"] == prior):
            sel = [r for r in rows if r["prior"] == prior and r["task"] == task]
            init = next(r["init_psnr"] for r in sel if r["mode"].startswith("warm"))
            lines += [f"**{prior}, {task}** (initializer alone: {init:.2f} dB)", "",
                      "| solver | " + " | ".join(modes) + " |", "|---" * (len(modes) + 1) + "|"]  # fmt: skip
            for solver in dict.fromkeys(r["solver"] for r in sel):
                cells = []
                for mode in modes:
                    r = next((r for r in sel if r["solver"] == solver and r["mode"] == mode), None)
                    auto = f" t0={r['t0']:.2g}" if r is not None and "auto" in mode else ""
                    cells.append("–" if r is None else f"{r['psnr']:.2f} / {r['ssim']:.3f} ({r['nfe']:.0f} NFE, "
                                 f"{r['seconds']:.1f} s){auto}")  # fmt: skip
                lines.append(f"| {solver} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
