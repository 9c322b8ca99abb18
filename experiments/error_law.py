"""The error law E(N', eps0) = V(N') + eps0 h(N') on the learned demo prior (issue 15, item 2).

    python experiments/error_law.py          # 22 s on an idle 2-core CPU

THEORY.md derives, for a Gaussian prior, that the mean squared error of a warm start is affine in
the size of the initial error. Here the same law is tested on the shipped demo UNet
(conf/model/demo_prior.yaml) and the held-out faces (the bundled ``ffhq/eval`` split; the net was
trained on crops of the ``prior`` split only). The setting:

* x4 super-resolution (ILVR's bicubic low-pass, projection DC, DDPM steps with beta) of 32 x 32
  crops (the net's training crop size) of the 4 held-out faces at 128 x 128, two crops per face;
* controlled initial errors ``x_init = x0 + sqrt(eps0) e`` with e white or low-pass (Gaussian
  blur, 2 px) noise, projected onto the operator's null space (the part DC cannot fix) and scaled to
  a mean squared value of 1 per pixel, so ``eps0`` is the per-pixel MSE of x_init;
* N' in {1, 3, 6, 12, 25} of an N = 100 grid (t0 = N'/100), eps0 in {0, 0.01, 0.04, 0.16};
* common random numbers: every (crop, N') has its own generator, the same for every eps0 and
  spectrum, so the differences between eps0 values come from e alone, not from sampler noise.

Per N' and spectrum it fits V and h by least squares over eps0 and reports R^2 and the largest
residual; the measured best t0 per eps0 (N' = 0, i.e. x_init itself, included). Writes
experiments/results/error_law.{json,md,png}.
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
from ccdf.denoisers.adapters import load_demo_prior  # noqa: E402
from ccdf.operators import SuperResolution  # noqa: E402
from ccdf.sampling import sample_ccdf  # noqa: E402
from ccdf.schedules import DiscreteVP  # noqa: E402
from ccdf.utils.rng import per_sample_generators  # noqa: E402

OUT = ROOT / "experiments" / "results"
NUM_STEPS = 100
STEPS = (1, 3, 6, 12, 25)
EPS0 = (0.0, 0.01, 0.04, 0.16)
SPECTRA = ("white", "lowpass")
CROP = 32
CORNERS = ((40, 32), (40, 64))  # top-left corners of the two crops per face (eyes and nose region)


def crops() -> torch.Tensor:
    faces = stack_images(bundled_samples("ffhq", "eval", 128))  # [4, 3, 128, 128] in [-1, 1]
    return torch.cat([faces[:, :, r : r + CROP, c : c + CROP] for r, c in CORNERS])


def unit_errors(op, shape, spectrum: str, seed: int) -> torch.Tensor:
    """Null-space noise with mean square 1 per pixel (per item)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(shape, generator=g)
    if spectrum == "lowpass":
        f = torch.fft.fftfreq(shape[-1])
        gain = torch.exp(-2 * (np.pi * 2.0) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))  # Gaussian blur, 2 px
        e = torch.fft.ifft2(torch.fft.fft2(e) * gain).real
    e = e - op.pinv(op(e))
    return e / e.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()


def fit(eps0: np.ndarray, err: np.ndarray) -> dict:
    design = np.stack([np.ones_like(eps0), eps0], 1)
    (v, h), *_ = np.linalg.lstsq(design, err, rcond=None)
    res = err - design @ np.array([v, h])
    r2 = 1 - float(np.sum(res**2)) / float(np.sum((err - err.mean()) ** 2))
    return {"V": float(v), "h": float(h), "r2": r2, "max_abs_residual": float(np.abs(res).max()),
            "max_rel_residual": float(np.abs(res / err).max())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    schedule = DiscreteVP.linear()
    denoiser = load_demo_prior(schedule)
    op = SuperResolution(4)
    x0 = crops()
    m = x0.shape[0]
    y = op(x0)
    configs = [("none", 0.0)] + [(s, e) for s in SPECTRA for e in EPS0 if e > 0]
    units = {s: unit_errors(op, x0.shape, s, args.seed + 1 + i) for i, s in enumerate(SPECTRA)}
    x_init, t0, gens, ys = [], [], [], []
    for spectrum, e0 in configs:
        for n in STEPS:
            x_init.append(x0 if spectrum == "none" else x0 + e0**0.5 * units[spectrum])
            t0 += [n / NUM_STEPS] * m
            gens += per_sample_generators(args.seed, [1000 * n + i for i in range(m)])  # common random numbers
            ys.append(y)
    with torch.no_grad():
        x = sample_ccdf(denoiser, schedule, op, torch.cat(ys), torch.cat(x_init), t0=t0, num_steps=NUM_STEPS,
                        generator=gens)  # fmt: skip
    per_item = (
        (x - x0.repeat(len(configs) * len(STEPS), 1, 1, 1))
        .pow(2)
        .mean(dim=(1, 2, 3))
        .reshape(len(configs), len(STEPS), m)
    )
    mse = per_item.mean(-1).double().numpy()
    se = (per_item.std(-1) / m**0.5).double().numpy()
    seconds = time.perf_counter() - tic
    result: dict = {"setting": {"task": "sr4 (bicubic), projection DC, DDPM beta", "num_steps": NUM_STEPS,
                                "steps": list(STEPS), "eps0": list(EPS0), "crops": m, "crop": CROP,
                                "seed": args.seed}, "seconds": round(seconds, 1), "spectra": {}}  # fmt: skip
    for spectrum in SPECTRA:
        rows = [0] + [configs.index((spectrum, e)) for e in EPS0 if e > 0]
        eps = np.array(EPS0)
        err = mse[rows]  # [eps0, N']
        fits = {str(n): fit(eps, err[:, j]) for j, n in enumerate(STEPS)}
        best = []
        for i, e0 in enumerate(EPS0):
            curve = np.concatenate([[e0], err[i]])  # N' = 0 is x_init itself: E = eps0
            k = int(np.argmin(curve))
            best.append({"eps0": e0, "best_steps": ([0, *STEPS])[k], "best_t0": ([0, *STEPS])[k] / NUM_STEPS,
                         "best_mse": float(curve[k])})  # fmt: skip
        result["spectra"][spectrum] = {"mse": err.tolist(), "se": se[rows].tolist(), "fits": fits, "best": best}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "error_law.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"Demo prior, sr4 on {m} held-out 32x32 crops, N = {NUM_STEPS}; MSE per pixel ([-1, 1] range). "
          f"{seconds:.0f} s.\n"]  # fmt: skip
    for spectrum, r in result["spectra"].items():
        md.append(f"\n**{spectrum} error**: fit E(N', eps0) = V + eps0 h over eps0 = {list(EPS0)}\n")
        md.append("| N' (t0) | V | h | R^2 | max rel. residual | E at eps0 = " + " / ".join(f"{e:g}" for e in EPS0)
                  + " |\n|---|---|---|---|---|---|\n")  # fmt: skip
        for j, n in enumerate(STEPS):
            f = r["fits"][str(n)]
            md.append(f"| {n} ({n / NUM_STEPS:g}) | {f['V']:.5f} | {f['h']:.4f} | {f['r2']:.5f} | "
                      f"{f['max_rel_residual']:.3f} | " + " / ".join(f"{r['mse'][i][j]:.5f}" for i in range(len(EPS0)))
                      + " |\n")  # fmt: skip
        md.append("\nmeasured best t0 (of 0 and the grid): " + ", ".join(
            f"eps0 {b['eps0']:g}: {b['best_t0']:g} (MSE {b['best_mse']:.5f})" for b in r["best"]) + "\n")  # fmt: skip
    (OUT / "error_law.md").write_text("".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(SPECTRA), figsize=(10, 4), sharey=True)
        for ax, (spectrum, r) in zip(axes, result["spectra"].items(), strict=True):
            for i, e0 in enumerate(EPS0):
                ax.errorbar([0, *STEPS], [e0, *r["mse"][i]], yerr=[0, *r["se"][i]], marker="o", label=f"eps0 {e0:g}")
                fitted = [e0] + [r["fits"][str(n)]["V"] + e0 * r["fits"][str(n)]["h"] for n in STEPS]
                ax.plot([0, *STEPS], fitted, "k:", lw=0.8)
            ax.set(title=f"{spectrum} initial error", xlabel="N' (of N = 100)", ylabel="MSE per pixel")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(OUT / "error_law.png", dpi=110)
    except ImportError:
        pass
    print("".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
