r"""The measured contraction of the theory report (issue #15, item 1): learned and Gaussian denoisers.

Along a CCDF trajectory (DDPM steps, variance beta, CCDF's projection data step, t0 = 1 on an N-step grid,
box inpainting: a centred ``hole`` x ``hole`` square in ``size`` x ``size`` centre crops of the bundled
evaluation faces at 128 x 128, the demo prior's training crop size), :func:`ccdf.theory.contraction.measure_contraction`
measures the Lipschitz factor of one reverse step followed by the data step, by power iteration on its
Jacobian, for

- ``demo_prior``: the learned demo prior shipped with ccdf (``model=demo_prior``);
- ``gaussian``: the stationary Gaussian prior of ``model=gaussian``, fitted to the bundled prior faces;

and puts it beside the paper's lambda_j and the exact factor of the Gaussian prior without the data step,
``||M_j|| = max_k m_j(s_k)`` over its per-frequency variances s_k (docs/reference/THEORY.md §4; with the data
step the factor ``||(I - P) M_j||`` is at most this). Power iteration approaches the largest singular value
from below: the measured values are lower bounds (docs/theory.md §9).

``python run.py task=theory`` writes this section into theory.json (``contraction``) with the figure
``contraction_measured.png`` (settings: ``theory.contraction``; ``theory.contraction=null`` skips it);
``python experiments/contraction.py`` runs it with more images and iterations.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

DENOISERS = ("demo_prior", "gaussian")
FIGURE = "contraction_measured.png"
FULL_SIZE = 128  # the bundled faces are read at this size; the crops come from their centre


def check_mapping(settings: Any) -> None:
    """:func:`check_settings` for a mapping (``theory.contraction``), unknown keys named."""
    import inspect

    known = set(inspect.signature(check_settings).parameters)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"theory.contraction: unknown key(s) {unknown}; known: {sorted(known)}")
    check_settings(**settings)


def check_settings(
    denoisers=DENOISERS, *, num_steps=100, every=10, iters=20, tol=1e-4, images=1, size=32, hole=12, double=False,
    seed=0,
) -> None:  # fmt: skip
    """Clear errors (naming the ``theory.contraction`` key) before anything is computed."""
    bad = [d for d in denoisers if d not in DENOISERS]
    if not denoisers or bad:
        raise ValueError(
            f"theory.contraction.denoisers must be a non-empty subset of {DENOISERS}, got {list(denoisers)}"
        )
    ints = dict(num_steps=(num_steps, 2), every=(every, 1), iters=(iters, 1), images=(images, 1), size=(size, 4))
    for key, (value, low) in ints.items():
        if isinstance(value, bool) or int(value) != value or int(value) < low:
            raise ValueError(f"theory.contraction.{key} must be an integer >= {low}, got {value!r}")
    if int(images) > 4:
        raise ValueError(f"theory.contraction.images: the bundled evaluation set has 4 faces, got {images}")
    if int(size) > FULL_SIZE or int(size) % 4:
        raise ValueError(f"theory.contraction.size must be a multiple of 4 and <= {FULL_SIZE}, got {size}")
    if not 1 <= int(hole) < int(size):
        raise ValueError(f"theory.contraction.hole must be in [1, size = {size}), got {hole}")
    if not float(tol) > 0:
        raise ValueError(f"theory.contraction.tol must be positive, got {tol}")
    if not isinstance(double, bool):
        raise ValueError(f"theory.contraction.double must be true or false, got {double!r}")


def measured_contraction(
    denoisers=DENOISERS, *, num_steps=100, every=10, iters=20, tol=1e-4, images=1, size=32, hole=12, double=False,
    seed=0, progress=None,
) -> dict[str, Any]:  # fmt: skip
    """Measure the factors (see the module docstring); JSON-ready.

    Args:
        denoisers: names in :data:`DENOISERS`.
        num_steps: N of the grid (t0 = 1: N reverse steps).
        every: measure every ``every``-th level (and the last).
        iters, tol: power iterations per measurement, at most, and the relative stopping tolerance.
        images: the first ``images`` bundled evaluation faces.
        size, hole: crop size and the centred square hole.
        double: float64 (else float32: about 1.6x faster; the iteration's own error is larger than either's).
        seed: the trajectory's per-item generators and the power iterations' starts.
        progress: called with a line of text after each denoiser.

    Returns:
        ``{"setting", "level", "t", "paper_lambda", "gaussian_exact_step_norm", "measured": {name: {"full",
        "unknown", "seconds"}}, "summary"}``; ``full``/``unknown`` are ``[levels][images]``.
    """
    import torch

    from ccdf.data.datasets import bundled_samples
    from ccdf.denoisers.adapters import load_demo_prior
    from ccdf.denoisers.gaussian import GaussianDenoiser, fit_stationary_prior
    from ccdf.operators import Inpainting
    from ccdf.schedules import DiscreteVP
    from ccdf.theory.contraction import measure_contraction
    from ccdf.theory.paper import contraction_factor

    check_settings(
        denoisers, num_steps=num_steps, every=every, iters=iters, tol=tol, images=images, size=size, hole=hole,
        double=double, seed=seed,
    )  # fmt: skip
    dtype = torch.float64 if double else torch.float32
    schedule = DiscreteVP.linear(1000)
    faces = bundled_samples("ffhq", "eval", size=FULL_SIZE, max_images=int(images))
    lo = (FULL_SIZE - size) // 2
    x0 = torch.stack([faces[i]["x0"][:, lo : lo + size, lo : lo + size] for i in range(len(faces))]).to(dtype)
    op = Inpainting.box(size, hole).to(dtype)
    y = op(x0)
    x_init = op.pinv(y)
    prior = fit_stationary_prior(bundled_samples("ffhq", "prior", size=FULL_SIZE))
    setting = dict(
        task="box inpainting", image_size=int(size), hole=int(hole), images=len(faces), num_steps=int(num_steps),
        t0=1.0, step="ddpm", variance="beta", dc="project", iters=int(iters), tol=float(tol), every=int(every),
        dtype=str(dtype).removeprefix("torch."), seed=int(seed),
    )  # fmt: skip
    result: dict[str, Any] = {"setting": setting, "measured": {}}
    c = None
    for name in dict.fromkeys(denoisers):
        if name == "demo_prior":
            denoiser = load_demo_prior(schedule).to(dtype).eval()
            for p in denoiser.parameters():
                p.requires_grad_(False)
        else:
            denoiser = GaussianDenoiser(prior, schedule)
        tic = time.perf_counter()
        c = measure_contraction(
            denoiser, schedule, op, y, x_init, t0=1.0, num_steps=int(num_steps), iters=int(iters), tol=float(tol),
            every=int(every), seed=int(seed),
        )  # fmt: skip
        seconds = round(time.perf_counter() - tic, 1)
        result["measured"][name] = {"full": c.full.tolist(), "unknown": c.unknown.tolist(), "seconds": seconds}
        if progress is not None:
            progress(f"measured contraction, {name}: {seconds:.0f} s, max factor {c.full.max():.4f}")
    result["level"] = c.level.tolist()
    result["t"] = c.t.tolist()
    result["paper_lambda"] = c.paper_lambda.tolist()
    # the step's linear part is diagonal in the prior's frequency basis with entries m_j(s_k), which grow with s_k:
    # its norm max_k m_j(s_k) is m_j at the largest per-frequency variance (docs/reference/THEORY.md §4)
    s_max = float(prior.power(size, size).double().max())
    exact = contraction_factor(schedule, int(num_steps), s_max)
    result["gaussian_exact_step_norm"] = exact[c.level].tolist()
    summary: dict[str, Any] = {}
    inner = c.level > 1  # the paper's lambda_1 = 0
    for name, m in result["measured"].items():
        full, unknown = np.asarray(m["full"]).max(axis=1), np.asarray(m["unknown"]).max(axis=1)
        summary[name] = {
            "max_full": float(full.max()),
            "max_unknown": float(unknown.max()),
            "levels_expanding": [int(j) for j, v in zip(c.level, full, strict=True) if v > 1],
            "max_over_paper_lambda": float(np.max(full[inner] / c.paper_lambda[inner])) if inner.any() else None,
        }
    summary["paper_lambda_max"] = float(np.max(c.paper_lambda))
    summary["gaussian_exact_step_norm_max"] = float(np.nanmax(exact[1:]))
    result["summary"] = summary
    return result


def write_figure(result: dict[str, Any], path: Path, dpi: int = 110) -> Path:
    """Per measured level: the paper's lambda_j, the Gaussian prior's exact step norm and, per denoiser, the
    measured factor (max over images) of the full map and of its unknown block; atomically."""
    import matplotlib.pyplot as plt

    from ccdf.utils.io import atomic_write

    t = np.asarray(result["t"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(t, result["paper_lambda"], "k--", label=r"paper $\lambda_j$")
    ax.plot(t, result["gaussian_exact_step_norm"], "C0:", label=r"Gaussian prior, exact $\|M_j\|$ (no data step)")
    styles = {"gaussian": ("C0", "Gaussian prior"), "demo_prior": ("C3", "demo prior (learned)")}
    for name, m in result["measured"].items():
        color, label = styles[name]
        full, unknown = np.asarray(m["full"]), np.asarray(m["unknown"])
        ax.plot(t, full.max(axis=1), "-", color=color, marker="o", ms=3, label=f"{label}: measured $\\|J\\|$")
        ax.plot(t, unknown.max(axis=1), "-", color=color, alpha=0.45, label=f"{label}: unknown block")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("t of the step (grid level j / N)")
    ax.set_ylabel("Lipschitz factor of step + data step")
    s = result["setting"]
    ax.set_title(
        f"Measured per-step contraction, box inpainting {s['image_size']}x{s['image_size']} "
        f"(N = {s['num_steps']}, max over {s['images']} image(s))",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return out


def markdown_section(result: dict[str, Any]) -> list[str]:
    """The report.md section: the setting, one row per measured level, the figure."""
    s = result["setting"]
    names = list(result["measured"])
    lines = [
        "## Measured contraction (learned and Gaussian denoisers)",
        "",
        f"One DDPM step + CCDF's projection, box inpainting ({s['hole']}x{s['hole']} hole in {s['image_size']}x"
        f"{s['image_size']} crops of {s['images']} evaluation face(s)), t0 = 1 on an N = {s['num_steps']} grid; "
        f"power iteration ({s['iters']} iterations at most, tolerance {s['tol']:g}, {s['dtype']}): lower bounds. "
        "Max over images; docs/theory.md §9.",
        "",
        "| level j | t | paper lambda_j | Gaussian exact max_k m_j | "
        + " | ".join(f"{n} full | {n} unknown" for n in names)
        + " |",
        "|---|---|---|---|" + "---|---|" * len(names),
    ]
    for k, (j, t) in enumerate(zip(result["level"], result["t"], strict=True)):
        cells = [f"{j}", f"{t:.3f}", f"{result['paper_lambda'][k]:.4f}", f"{result['gaussian_exact_step_norm'][k]:.4f}"]
        for n in names:
            m = result["measured"][n]
            cells += [f"{max(m['full'][k]):.4f}", f"{max(m['unknown'][k]):.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    secs = ", ".join(f"{n} {result['measured'][n]['seconds']:.0f} s" for n in names)
    lines += ["", f"Time: {secs}.", "", f"![{FIGURE}]({FIGURE})", ""]
    return lines
