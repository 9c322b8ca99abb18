"""``report.md`` of the theory report: the tables, the figure links and the ours-vs-THEORY table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ccdf.theory.report.numbers import SHAPES, VARIANT_LABELS


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool | int | str):
        return str(x)
    return f"{x:.{digits}g}"


def markdown(result: dict[str, Any], figures: Sequence[str]) -> str:
    """The whole report: header, figure links, one section per problem, the reproduction of THEORY.md."""
    lines = [
        "# CCDF theory report",
        "",
        "Exact error of CCDF on THEORY.md's two linear-Gaussian test problems (16x16 periodic power-law prior,",
        "per-pixel variance 0.25; errors summed over the 256 pixels), computed by `ccdf.theory` for the project's",
        f"samplers on the linear VP schedule with N = {result['settings']['num_steps']}.",
        "E(N', eps0) = V(N') + eps0 h(N'):",
        "V (posterior spread) rises and h (forgetting) falls with N'. See docs/theory.md for the reading.",
        "",
        f"Written in {result['seconds']:.1f} s.",
        "",
    ]
    lines += [f"![{f}]({f})" for f in figures]
    lines.append("")
    for num in result["problems"].values():
        lines += _problem_section(num)
    if "contraction" in result:
        from ccdf.theory.report.measured import markdown_section

        lines += markdown_section(result["contraction"])
    lines += _reference_section(result.get("reference"))
    return "\n".join(lines) + "\n"


def _problem_section(num: dict[str, Any]) -> list[str]:
    post = num["posterior"]
    kind = "commuting" if num["commuting"] else "non-commuting"
    lines = [
        f"## {num['name']} (n = {num['n']}, n_u = {num['n_u']}, {kind})",
        "",
        f"tr Sigma_post = {_fmt(post['trace'])}, eigenvalues in [{_fmt(post['min'])}, {_fmt(post['max'])}], "
        f"harmonic mean {_fmt(post['harmonic_mean'])}; an exact posterior sampler has "
        f"E = {_fmt(post['exact_sampler_error'])}.",
        "",
        "Full run (N' = N): " + ", ".join(f"{VARIANT_LABELS[v]} {_fmt(e)}" for v, e in num["full_run_error"].items()),
        "",
    ]
    for k, per in num["tables"].get("ddpm", {}).items():
        lines += _shape_table(num, k, per)
    thm = num["theorem1"]["violations"]["ddpm"]
    lines += [
        "Theorem 1 (project's DDPM): N' values where the exact D exceeds the bound: "
        + ", ".join(f"eps0/n_u {key.replace('_', ' ')}: {v['count']}" for key, v in thm.items()),
        "",
        f"||A M_i A|| max {_fmt(num['unknown_block_norm']['max'], 6)}, > 1 for "
        f"{num['unknown_block_norm']['expansive_steps']} steps.",
        "",
    ]
    return lines


def _shape_table(num: dict[str, Any], k: str, per: dict[str, Any]) -> list[str]:
    """One error shape's table: the project's DDPM, DDIM if computed, and the two ideal closed forms."""
    head = "| eps0/n_u | t0* | E* | E(t0 = 0.2) | E(full) |"
    sep = "|---|---|---|---|---|"
    extra = [v for v in ("ddim",) if v in num["tables"]]
    for v in extra:
        head += f" {VARIANT_LABELS[v]} t0* / E* |"
        sep += "---|"
    head += " ideal t0* / E* | ideal DDIM t0* / E* |"
    sep += "---|---|"
    threshold = _fmt(per["no_diffusion_threshold_per_unknown"])
    lines = [f"**{k} error**, project's DDPM (no-diffusion threshold eps0/n_u = {threshold}):", "", head, sep]
    for i, row in enumerate(per["rows"]):
        cells = [_fmt(row[c]) for c in ("eps0_per_unknown", "t0_opt", "error_opt", "error_t0_0.2", "error_full")]
        for v in extra:
            r2 = num["tables"][v][k]["rows"][i]
            cells.append(f"{_fmt(r2['t0_opt'])} / {_fmt(r2['error_opt'])}")
        for sampler in ("ddpm", "ddim"):
            r3 = num["ideal"][sampler][k][i]
            cells.append(f"{_fmt(r3['t0_opt'])} / {_fmt(r3['error_opt'])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _reference_section(ref: dict[str, Any] | None) -> list[str]:
    if not ref:
        return []
    if "checks" not in ref:
        return ["## Reproduction of THEORY.md", "", f"skipped: {ref['skipped']}"]
    lines = [
        "## Reproduction of THEORY.md",
        "",
        f"{ref['num_pass']} of {ref['num_checks']} reference values pass ({ref['rule']}).",
        "",
        "| quantity | THEORY | ours | pass |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {c['quantity']} | {c['theory']} | {_fmt(c['ours'], 5)} | {'yes' if c['pass'] else '**no**'} |"
        for c in ref["checks"]
    ]
    lines += ["", "Known deviations (not counted above):", ""]
    for d in ref["deviations"]:
        lines.append(f"- {d['quantity']}: THEORY {d['theory']}, ours {_fmt(d['ours'], 5)}: {d['why']}.")
    lines += ["", "THEORY's DDPM recursion adds beta_1 noise on the last step; the project's sampler does not:", ""]
    for name, r in ref["readings"].items():
        nd = r["no_diffusion_threshold_per_unknown"]
        lines.append(
            f"- {name}: full run {_fmt(r['full_run_error']['theory_reading'], 5)} (THEORY's reading) vs "
            f"{_fmt(r['full_run_error']['project_code'], 5)} (project); no-diffusion thresholds iso/top/bottom "
            + "/".join(_fmt(nd[k]["theory_reading"], 3) for k in SHAPES)
            + " vs "
            + "/".join(_fmt(nd[k]["project_code"], 3) for k in SHAPES)
            + "."
        )
    return lines
