"""Measured contraction of one CCDF step for the learned demo prior and the Gaussian prior (issue #15, item 1).

    python experiments/contraction.py                 # ~15 minutes on 2 busy CPU cores
    python experiments/contraction.py --every 5 --iters 40 --images 4

Along a CCDF trajectory (DDPM steps with CCDF's projection data step, t0 = 1 of a 100-step grid, box
inpainting: a centred 12x12 hole in 32x32 centre crops of the bundled evaluation faces, the demo prior's
training crop size), the Lipschitz factor of one reverse step followed by the data step is measured by power
iteration on its Jacobian (:func:`ccdf.theory.contraction.measure_contraction`) for

- ``demo_prior``: the learned demo prior shipped with ccdf (``model=demo_prior``);
- ``gaussian``: the stationary Gaussian prior of ``model=gaussian``, fitted to the 6 bundled prior faces;

and compared per step with the paper's lambda_j and with the exact factor of the Gaussian prior without the
data step, ``||M_j|| = max_k m_j(s_k)`` over its per-frequency variances s_k (THEORY.md §4; with the data
step the factor ``||(I - P) M_j||`` is at most this). Writes experiments/results/contraction.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ccdf.data.datasets import bundled_samples
from ccdf.denoisers.adapters import load_demo_prior
from ccdf.denoisers.gaussian import GaussianDenoiser, fit_stationary_prior
from ccdf.operators import Inpainting
from ccdf.schedules import DiscreteVP
from ccdf.theory.contraction import measure_contraction
from ccdf.theory.propagation import grid_coefficients

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results"
SIZE, HOLE = 32, 12


def gaussian_step_norm(variances: np.ndarray, schedule, num_steps: int) -> np.ndarray:
    """``||M_j||_2 = max_k m_j(s_k)`` of the DDPM step (variance beta) with the exact Gaussian denoiser, ``[N+1]``."""
    _, alpha, sigma = grid_coefficients(schedule, num_steps)
    out = np.full(num_steps + 1, np.nan)
    for j in range(1, num_steps + 1):
        a_t, s_t, a_s, s_s = alpha[j], sigma[j], alpha[j - 1], sigma[j - 1]
        var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)
        gain = a_t * variances / (a_t**2 * variances + s_t**2)
        out[j] = float(np.max(np.abs((a_s * var_ts / s_t**2) * gain + (a_t / a_s) * s_s**2 / s_t**2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="measure every k-th level (and the last)")
    parser.add_argument("--iters", type=int, default=25, help="power iterations per measurement (at most)")
    parser.add_argument("--tol", type=float, default=1e-5, help="stop when the estimate changes less (relative)")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    schedule = DiscreteVP.linear(1000)
    faces = bundled_samples("ffhq", "eval", size=128, max_images=args.images)
    lo = (128 - SIZE) // 2
    x0 = torch.stack([faces[i]["x0"][:, lo : lo + SIZE, lo : lo + SIZE] for i in range(len(faces))]).double()
    op = Inpainting.box(SIZE, HOLE).double()
    y = op(x0)
    x_init = op.pinv(y)
    prior = fit_stationary_prior(bundled_samples("ffhq", "prior", size=128))
    variances = prior.power(SIZE, SIZE).numpy()
    denoisers = {
        "demo_prior": load_demo_prior(schedule).double().eval(),
        "gaussian": GaussianDenoiser(prior, schedule),
    }
    setting = dict(task="box inpainting", image_size=SIZE, hole=HOLE, images=len(faces), num_steps=args.num_steps)
    setting.update(t0=1.0, step="ddpm", variance="beta", dc="project", iters=args.iters, tol=args.tol, every=args.every)
    result = {"setting": setting, "measured": {}}
    for name, denoiser in denoisers.items():
        for p in getattr(denoiser, "parameters", lambda: [])():
            p.requires_grad_(False)
        tic = time.perf_counter()
        c = measure_contraction(denoiser, schedule, op, y, x_init, t0=1.0, num_steps=args.num_steps,
                                iters=args.iters, tol=args.tol, every=args.every)  # fmt: skip
        result["measured"][name] = {
            "full": c.full.tolist(), "unknown": c.unknown.tolist(), "seconds": round(time.perf_counter() - tic, 1),
        }  # fmt: skip
        seconds = time.perf_counter() - tic
        print(f"{name}: {seconds:.0f} s, max factor {c.full.max():.4f} (unknown {c.unknown.max():.4f})")
    result["level"] = c.level.tolist()
    result["t"] = c.t.tolist()
    result["paper_lambda"] = c.paper_lambda.tolist()
    exact = gaussian_step_norm(variances, schedule, args.num_steps)
    result["gaussian_exact_step_norm"] = exact[c.level].tolist()
    summary = {}
    for name in denoisers:
        full = np.asarray(result["measured"][name]["full"])
        unknown = np.asarray(result["measured"][name]["unknown"])
        summary[name] = {
            "max_full": float(full.max()), "max_unknown": float(unknown.max()),
            "levels_expanding": [int(j) for j, v in zip(c.level, full.max(axis=1), strict=True) if v > 1],
            "max_over_paper_lambda": float(np.max(full.max(axis=1)[c.level > 1] / c.paper_lambda[c.level > 1])),
        }  # fmt: skip
    summary["paper_lambda_max"] = float(np.max(c.paper_lambda))
    summary["gaussian_exact_step_norm_max"] = float(np.max(exact[1:]))
    result["summary"] = summary
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "contraction.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, OUT / "contraction.png")
    print(json.dumps(summary, indent=1))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(result["t"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(t, result["paper_lambda"], "k--", label=r"paper $\lambda_j$")
    ax.plot(t, result["gaussian_exact_step_norm"], "C0:", label=r"Gaussian prior, exact $\|M_j\|$ (no data step)")
    styles = {"gaussian": ("C0", "Gaussian prior"), "demo_prior": ("C3", "demo prior (learned)")}
    for name, (color, label) in styles.items():
        m = result["measured"][name]
        full, unknown = np.asarray(m["full"]), np.asarray(m["unknown"])
        ax.plot(t, full.max(axis=1), "-", color=color, marker="o", ms=3, label=f"{label}: measured $\\|J\\|$")
        ax.plot(t, unknown.max(axis=1), "-", color=color, alpha=0.45, label=f"{label}: unknown block")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("t of the step (grid level j / N)")
    ax.set_ylabel("Lipschitz factor of step + data step")
    ax.set_title("Measured per-step contraction, box inpainting 32x32 (max over images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
