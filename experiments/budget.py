"""The budget question (issue 15, item 5): one warm start with N' = B or the mean of K with N' = B/K?

    python experiments/budget.py            # exact part only
    python experiments/budget.py --demo     # also the demo prior: 25 s in all on an idle 2-core CPU

Exact part (ccdf.theory.budget): THEORY's box inpainting (16 x 16 power-law prior, central 8 x 8
hole, iso initial error), the project's DDPM (beta) on the linear VP chain; for budgets
B in {10, 20, 50, 100} and eps0/n_u in {0.03, 0.1, 0.3, 1, 3}: every K dividing B, N' = B/K, and
25 start times from 0.01 to 1; the MSE-optimal (K, t0) against the best single run.

Demo part: x4 super-resolution (bicubic start, projection DC) of 8 held-out 32 x 32 crops with the
learned demo prior, budget B = 20: the measured MSE of every (K, t0) of a small grid
(``sampler.average=K``, i.e. :func:`ccdf.sampling.sample_ccdf` with ``average=K``), and where the
exact rule's choice lands. The rule is computed on a Gaussian stand-in built from the *prior*
split only: a 16 x 16 power-law prior with the prior faces' pixel variance, the same x4 operator
(its projector A^+A), and an iso initial error of the bicubic start's per-pixel MSE on the prior
faces. Writes experiments/results/budget.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccdf.data.datasets import bundled_samples, stack_images  # noqa: E402
from ccdf.schedules import DiscreteVP  # noqa: E402
from ccdf.theory import box_inpainting, error_shape, make_problem, periodic_prior_cov  # noqa: E402
from ccdf.theory.budget import best_allocation  # noqa: E402

OUT = ROOT / "experiments" / "results"
BUDGETS = (10, 20, 50, 100)
EPS0_PER_UNKNOWN = (0.03, 0.1, 0.3, 1.0, 3.0)
DEMO_BUDGET = 20
DEMO_RUNS = (1, 2, 5, 20)
DEMO_T0S = (0.03, 0.1, 0.2, 0.4)
CROP = 32
CORNERS = ((40, 32), (40, 64))


def exact() -> dict:
    schedule = DiscreteVP.linear()
    problem = box_inpainting()
    b = error_shape(problem, "iso")
    out = {"problem": "box inpainting (THEORY.md), iso error, DDPM beta", "budgets": {}}
    for budget in BUDGETS:
        ch = best_allocation(problem, schedule, budget, [r * problem.n_u for r in EPS0_PER_UNKNOWN], error_shape=b)
        out["budgets"][str(budget)] = {
            "runs": ch.runs.tolist(),
            "t0": ch.t0.tolist(),
            "error": ch.error.tolist(),
            "best": [
                {"eps0_per_unknown": r, "runs": int(k), "steps": budget // int(k), "t0": float(t), "mse": float(e),
                 "single_t0": float(st), "single_mse": float(se)}
                for r, k, t, e, st, se in zip(EPS0_PER_UNKNOWN, ch.best_runs, ch.best_t0, ch.best_error,
                                               ch.single_t0, ch.single_error, strict=True)
            ],
        }  # fmt: skip
    return out


def _crops(split: str) -> torch.Tensor:
    faces = stack_images(bundled_samples("ffhq", split, 128))
    return torch.cat([faces[:, :, r : r + CROP, c : c + CROP] for r, c in CORNERS])


def demo(seed: int) -> dict:
    from ccdf.denoisers.adapters import load_demo_prior
    from ccdf.operators import SuperResolution
    from ccdf.sampling import sample_ccdf
    from ccdf.utils.rng import per_sample_generators

    schedule = DiscreteVP.linear()
    op = SuperResolution(4)
    # the exact rule on a Gaussian stand-in fitted to the prior split (never the evaluation faces)
    prior = _crops("prior")
    pixel_var = float(prior.var(dim=0).mean())
    init_prior = op.upsample_bicubic(op(prior))
    null = (init_prior - prior) - op.pinv(op(init_prior - prior))
    init_mse = float(null.pow(2).mean())  # per pixel, unknown part
    n = 16
    eye = torch.eye(n * n, dtype=torch.float64).reshape(n * n, 1, n, n)
    proj = op.pinv(op(eye)).reshape(n * n, n * n).T.numpy()
    problem = make_problem(periodic_prior_cov(n, pixel_var=pixel_var), proj=0.5 * (proj + proj.T))
    rule = best_allocation(problem, schedule, DEMO_BUDGET, [init_mse * n * n], runs=DEMO_RUNS, t0s=DEMO_T0S,
                           error_shape=error_shape(problem, "iso"))  # fmt: skip
    # measured on the held-out crops
    denoiser = load_demo_prior(schedule)
    x0 = _crops("eval")
    y = op(x0)
    x_init = op.upsample_bicubic(y)
    m = x0.shape[0]
    measured = np.zeros((len(DEMO_RUNS), len(DEMO_T0S)))
    se = np.zeros_like(measured)
    grid_t0 = np.zeros_like(measured)
    for i, k in enumerate(DEMO_RUNS):
        steps = DEMO_BUDGET // k
        for j, t0 in enumerate(DEMO_T0S):
            num_steps = max(round(steps / t0), steps)
            grid_t0[i, j] = steps / num_steps
            with torch.no_grad():
                x = sample_ccdf(denoiser, schedule, op, y, x_init, t0=steps / num_steps, num_steps=num_steps,
                                average=k, generator=per_sample_generators(seed, range(m)))  # fmt: skip
            err = (x - x0).pow(2).mean(dim=(1, 2, 3))
            measured[i, j], se[i, j] = float(err.mean()), float(err.std() / m**0.5)
            print(f"K={k} N'={steps} t0={steps / num_steps:.3g}: MSE {measured[i, j]:.5f} +- {se[i, j]:.5f}",
                  flush=True)  # fmt: skip
    bi, bj = np.unravel_index(measured.argmin(), measured.shape)
    ri = DEMO_RUNS.index(int(rule.best_runs[0]))
    rj = int(np.argmin(np.abs(grid_t0[ri] - rule.best_t0[0])))
    order = np.argsort(measured.reshape(-1))
    rank = int(np.where(order == ri * len(DEMO_T0S) + rj)[0][0]) + 1
    return {
        "budget": DEMO_BUDGET,
        "runs": list(DEMO_RUNS),
        "t0": grid_t0.tolist(),
        "mse": measured.tolist(),
        "se": se.tolist(),
        "init_mse": float((x_init - x0).pow(2).mean()),
        "stand_in": {"pixel_var": pixel_var, "init_mse_unknown": init_mse, "n": n * n, "n_u": problem.n_u},
        "rule": {"runs": int(rule.best_runs[0]), "t0": float(rule.best_t0[0]), "predicted_mse_per_pixel":
                 float(rule.best_error[0]) / (n * n), "measured_mse": float(measured[ri, rj]), "rank": rank,
                 "of": int(measured.size)},
        "best": {"runs": int(DEMO_RUNS[bi]), "t0": float(grid_t0[bi, bj]), "mse": float(measured[bi, bj])},
        "best_single": {"t0": float(grid_t0[0, measured[0].argmin()]), "mse": float(measured[0].min())},
    }  # fmt: skip


def markdown(result: dict) -> str:
    md = ["**Exact (Gaussian box inpainting, iso error)**: best (K, N', t0) per budget and eps0/n_u; MSE "
          "(sum over the 256 pixels) of the best K-average vs the best single run (K = 1, N' = B)\n\n"
          "| B | " + " | ".join(f"eps0/n_u = {r:g}" for r in EPS0_PER_UNKNOWN) + " |\n|---|"
          + "---|" * len(EPS0_PER_UNKNOWN) + "\n"]  # fmt: skip
    for budget, r in result["exact"]["budgets"].items():
        cells = [f"K={b['runs']}, N'={b['steps']}, t0={b['t0']:.3g}: {b['mse']:.2f} (K=1: {b['single_mse']:.2f} "
                 f"at t0={b['single_t0']:.3g})" for b in r["best"]]  # fmt: skip
        md.append(f"| {budget} | " + " | ".join(cells) + " |\n")
    if "demo" in result:
        d = result["demo"]
        md.append(f"\n**Demo prior, sr4, 8 held-out 32x32 crops, B = {d['budget']}**: measured MSE per pixel "
                  f"(bicubic start: {d['init_mse']:.5f})\n\n| K (N') | "
                  + " | ".join(f"t0 ~ {t:g}" for t in DEMO_T0S) + " |\n|---|"
                  + "---|" * len(DEMO_T0S) + "\n")  # fmt: skip
        for i, k in enumerate(d["runs"]):
            md.append(f"| {k} ({d['budget'] // k}) | " + " | ".join(
                f"{d['mse'][i][j]:.5f} ± {d['se'][i][j]:.5f}" for j in range(len(DEMO_T0S))) + " |\n")  # fmt: skip
        ru, be, bs = d["rule"], d["best"], d["best_single"]
        md.append(f"\nExact rule (Gaussian stand-in from the prior split): K = {ru['runs']}, t0 = {ru['t0']:.3g} "
                  f"(predicted {ru['predicted_mse_per_pixel']:.5f}); measured there {ru['measured_mse']:.5f}, rank "
                  f"{ru['rank']} of {ru['of']}. Measured best: K = {be['runs']}, t0 = {be['t0']:.3g}, "
                  f"{be['mse']:.5f}; best single run: t0 = {bs['t0']:.3g}, {bs['mse']:.5f}.\n")  # fmt: skip
    md.append(f"\n{result['seconds']:.0f} s.\n")
    return "".join(md)


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    budgets = result["exact"]["budgets"]
    r = budgets.get("20") or next(iter(budgets.values()))
    err = np.array(r["error"])  # [eps0, K, t0]
    for p, e in enumerate(EPS0_PER_UNKNOWN):
        axes[0].plot(r["runs"], err[p].min(1), marker="o", label=f"eps0/n_u = {e:g}")
    axes[0].set(xscale="log", xlabel="K (N' = 20 / K)", ylabel="MSE, best t0 (sum over pixels)",
                title="Box inpainting, B = 20: K-average vs K")  # fmt: skip
    axes[0].legend(fontsize=7)
    for budget, rb in result["exact"]["budgets"].items():
        axes[1].plot(EPS0_PER_UNKNOWN, [b["mse"] / b["single_mse"] for b in rb["best"]], marker="o",
                     label=f"B = {budget}")  # fmt: skip
    axes[1].set(xscale="log", xlabel="eps0 / n_u", ylabel="best K-average MSE / best single-run MSE",
                title="Gain of the optimal allocation")  # fmt: skip
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also measure on the demo prior")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    result: dict = {"exact": exact()}
    if args.demo:
        result["demo"] = demo(args.seed)
    result["seconds"] = round(time.perf_counter() - tic, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "budget.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (OUT / "budget.md").write_text(md)
    figure(result, OUT / "budget.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
