"""Time CCDF's reverse loop and the operators: seconds per step and per image at a given size.

    python experiments/benchmark_sampling.py --size 256 --batch 4 --steps 50
    python experiments/benchmark_sampling.py --device cuda --size 256 --batch 16

Prints one line per (operator, sampler). The Gaussian model stands in for a network, so the
numbers are the framework's overhead (DC steps, schedule, noise), to compare against a network's
forward time.
"""

from __future__ import annotations

import argparse
import time

import torch

from ccdf.data import bundled_samples, stack_images
from ccdf.denoisers import CountingDenoiser, GaussianDenoiser
from ccdf.denoisers.gaussian import fit_stationary_prior
from ccdf.operators import Inpainting, SingleCoilMRI, SuperResolution, measure
from ccdf.sampling import sample_ccdf
from ccdf.schedules import VE, DiscreteVP
from ccdf.utils.rng import per_sample_generators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="reverse steps to time (N')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    prior = fit_stationary_prior(bundled_samples("ffhq", "prior", size=args.size)).to(device)
    faces = stack_images(bundled_samples("ffhq", "eval", size=args.size))
    x0 = faces[torch.arange(args.batch) % len(faces)].to(device, dtype)
    knee = torch.complex(x0[:, :1], torch.zeros_like(x0[:, :1]))
    vp, ve = DiscreteVP.linear(), VE(0.01, 378.0)
    cases = [
        ("inpaint_random", Inpainting.random(args.size, 0.7), x0, vp, dict(step="ddpm")),
        ("superres_x4", SuperResolution(4), x0, vp, dict(step="ddpm")),
        ("superres_x4 ddim", SuperResolution(4), x0, vp, dict(step="ddim")),
        (
            "mri_x4 ve_pc",
            SingleCoilMRI.cartesian(args.size, 4, 0.08),
            knee,
            ve,
            dict(step="ancestral", corrector="langevin"),
        ),
    ]
    print(f"device={device} dtype={args.dtype} size={args.size} batch={args.batch} steps={args.steps}")
    for name, op, x, schedule, kw in cases:
        op = op.to(device)
        den = CountingDenoiser(GaussianDenoiser(prior, schedule))
        gens = per_sample_generators(0, range(len(x)))
        y = measure(op, x, 0.0, gens)
        x_init = op.pinv(y)
        t0 = args.steps / 1000
        sample_ccdf(den, schedule, op, y, x_init, t0=2 / 1000, num_steps=1000, generator=gens, **kw)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        den.reset()
        tic = time.perf_counter()
        sample_ccdf(den, schedule, op, y, x_init, t0=t0, num_steps=1000, generator=gens, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - tic
        print(
            f"{name:18s} NFE/image={den.calls:4d}  {sec / args.steps * 1e3:8.2f} ms/step  {sec / len(x):7.3f} s/image"
        )


if __name__ == "__main__":
    main()
