"""The five figures of the theory report (matplotlib, Agg; imported only when the report is written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccdf.theory.closed_form import ideal_curve
from ccdf.theory.paper import contraction_factor, paper_constants, theorem1_bound
from ccdf.theory.problems import periodic_prior_cov
from ccdf.theory.report.numbers import SHAPES, THEOREM1_EPS0, VARIANT_LABELS, _argmin, _log_index


def write_figures(arrays, numbers, eps0_grid, schedule, num_steps: int, paths: list[Path], dpi: int) -> list[Path]:
    """The figures of :data:`ccdf.theory.report.FIGURES`, in that order, to ``paths``."""
    return [
        _fig_error_vs_t0(arrays, eps0_grid, num_steps, paths[0], dpi),
        _fig_optimal_t0(arrays, schedule, num_steps, paths[1], dpi),
        _fig_bound(arrays, schedule, num_steps, paths[2], dpi),
        _fig_contraction(arrays, schedule, num_steps, paths[3], dpi),
        _fig_frechet(numbers, paths[4], dpi),
    ]


def _panels(arrays):
    """One figure, one panel per problem: ``(fig, [(ax, name), ...])``."""
    import matplotlib.pyplot as plt

    names = list(arrays)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.6), squeeze=False)
    return fig, list(zip(axes[0], names, strict=True))


def _label(ax, xlabel: str, ylabel: str, title: str, *, logy: bool) -> None:
    """Log x axis (log y too with ``logy``), the labels, a small title and legend."""
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    from ccdf.utils.io import atomic_write

    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return out


def _fig_error_vs_t0(arrays, eps0_grid, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig, panels = _panels(arrays)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(eps0_grid)))
    for ax, name in panels:
        pb, props = arrays[name]["problem"], arrays[name]["props"]
        idx = _log_index(num_steps)
        t = props["ddpm"].t0[idx]
        for c, r in zip(colors, eps0_grid, strict=True):
            for v, ls in (("ddpm", "-"), ("ddim", "--")):
                if v not in props:
                    continue
                e = props[v].error(r * pb.n_u) / pb.n_u
                ax.plot(t, e[idx], ls, color=c, lw=1.2, label=f"{r:g}" if v == "ddpm" else None)
                j = _argmin(e)
                ax.plot(
                    max(j, 1) / num_steps,
                    e[j],
                    "o" if v == "ddpm" else "s",
                    color=c,
                    ms=4,
                    mfc="none" if v == "ddim" else c,
                )
        ax.axhline(2 * pb.post_var.sum() / pb.n_u, color="k", ls=":", lw=0.8)
        title = f"{pb.name}: solid DDPM, dashed DDIM;\nmarkers: optimum (left edge = no diffusion)"
        _label(ax, "t0 (N' = t0 N)", "E / n_u (MSE per unknown pixel)", title, logy=True)
        ax.legend(title="eps0 / n_u", fontsize=7, title_fontsize=7)
    return _save(fig, path, dpi)


def _fig_optimal_t0(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    eps = np.geomspace(0.003, 10, 60)
    fig, panels = _panels(arrays)
    for ax, name in panels:
        pb, props, w = arrays[name]["problem"], arrays[name]["props"], arrays[name]["weights"]
        for v, k, style in (
            ("ddpm", "iso", "C0-"),
            ("ddpm", "top", "C1-"),
            ("ddpm", "bottom", "C2-"),
            ("ddim", "iso", "C0--"),
        ):
            if v not in props:
                continue
            pr = props[v]
            e = pr.V[None] + (eps * pb.n_u)[:, None] * pr.h[SHAPES.index(k)][None]
            ax.plot(eps, np.argmin(e, axis=1) / num_steps, style, lw=1.3, label=f"{VARIANT_LABELS[v]}, {k}")
        ideal = [
            np.argmin(ideal_curve(schedule, num_steps, pb.post_var, r * pb.n_u * w["iso"])) / num_steps for r in eps
        ]
        ax.plot(eps, ideal, "k:", lw=1.2, label="ideal (closed form), iso")
        title = f"{pb.name}: the optimal t0 grows with the initial error"
        _label(ax, "eps0 / n_u (initial MSE per unknown pixel)", "MSE-optimal t0", title, logy=False)
        ax.legend(fontsize=6.5)
    return _save(fig, path, dpi)


def _fig_bound(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig, panels = _panels(arrays)
    colors = plt.cm.plasma(np.linspace(0, 0.8, len(THEOREM1_EPS0)))
    for ax, name in panels:
        pb, pr = arrays[name]["problem"], arrays[name]["props"]["ddpm"]
        idx = _log_index(num_steps)
        t = pr.t0[idx]
        for c, r in zip(colors, THEOREM1_EPS0, strict=True):
            eps0 = r * pb.n_u
            ax.plot(t, pr.distance(eps0)[idx], "-", color=c, lw=1.3, label=f"exact D, eps0/n_u = {r:g}")
            bound = theorem1_bound(schedule, num_steps, n=pb.n, tau=pb.tau, eps0=eps0)
            ax.plot(t, bound[idx], "--", color=c, lw=1)
        title = f"{pb.name}: exact two-run distance (solid)\nvs Theorem 1's bound (dashed), iso error"
        _label(ax, "t0", "E||x_rec - x~_rec||^2", title, logy=True)
        ax.legend(fontsize=6.5)
    return _save(fig, path, dpi)


def _fig_contraction(arrays, schedule, num_steps, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    pc = paper_constants(schedule, num_steps)
    s_max = float(np.linalg.eigvalsh(periodic_prior_cov()).max())
    m = contraction_factor(schedule, num_steps, s_max)
    i = np.arange(num_steps + 1)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.2, 3.6))
    ax.plot(i[1:], pc.lam[1:], "k-", lw=1.2, label="paper lambda_i (point-mass prior)")
    ax.plot(i[1:], m[1:], "C3-", lw=1.2, label=f"true m_i(s_max = {s_max:.2f})")
    for name, style in (("box", "C0--"), ("eigen", "C2:")):
        if name in arrays:
            ax.plot(i[1:], arrays[name]["block"][1:], style, lw=1.2, label=f"||A M_i A||, {name}")
    ax.axhline(1.0, color="gray", lw=0.7)
    ax.set_ylim(0.97, 1.004)
    ax.set_xlabel("reverse step i")
    ax.set_ylabel("per-step factor")
    ax.set_title("per-step factors (> 1: the step expands)", fontsize=8)
    ax.legend(fontsize=6.5, loc="lower right")
    lam_max = np.maximum.accumulate(np.nan_to_num(pc.lam[1:]))
    bx.plot(i[1:], lam_max ** i[1:], "k-", lw=1.2, label="paper: lambda^N'")
    bx.plot(i[1:], np.cumprod(m[1:]), "C3-", lw=1.2, label="true: prod m_i(s_max)")
    bx.plot(
        i[1:], np.sqrt(pc.alpha_bar[1:]) * np.cumprod(m[1:]), "C3--", lw=1, label="with the forward jump: Wiener gain u"
    )
    bx.set_yscale("log")
    bx.set_xlabel("N'")
    bx.set_ylabel("gain on the initial error (top direction)")
    bx.set_title("products over N' steps", fontsize=8)
    bx.legend(fontsize=6.5)
    return _save(fig, path, dpi)


def _fig_frechet(numbers, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    names = list(numbers)
    fig, axes = plt.subplots(len(names), 2, figsize=(9.2, 3.3 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        curves = numbers[name]["mse_vs_frechet"]
        colors = plt.cm.viridis(np.linspace(0, 0.85, len(curves)))
        for ax, key, target in zip(
            row, ("frechet_data", "frechet_posterior"), ("data law", "posterior (mean over y)"), strict=True
        ):
            for c, cur in zip(colors, curves, strict=True):
                x, y = np.array(cur[key], dtype=float), np.array(cur["error"], dtype=float)
                ax.plot(x, y, "-", color=c, lw=1.2, label=f"eps0/n_u = {cur['eps0_per_unknown']:g}")
                k = cur["reverse_steps"].index(cur["mse_optimal_reverse_steps"])
                ax.plot(x[k], y[k], "o", color=c, ms=6)
                ax.annotate(
                    f"t0*={cur['t0'][k]:.3g}", (x[k], y[k]), fontsize=6, xytext=(4, 4), textcoords="offset points"
                )
                ax.plot(x[0], y[0], "x", color=c, ms=5)
            title = f"{numbers[name]['name']}: t0 from 0 (x) to 1; dot = MSE optimum"
            _label(ax, f"Fréchet distance to the {target}", "E (MSE)", title, logy=False)
            ax.legend(fontsize=6.5)
    return _save(fig, path, dpi)
