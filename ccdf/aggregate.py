"""Summarise a sweep: one row per run (t0, N', NFE, metrics), as CSV and Markdown, plus plots.

    python -m ccdf.aggregate outputs/multiruns/inpaint/<time>      # writes summary.csv, summary.md,
                                                                    # <metric>_vs_reverse_steps.png, <metric>_vs_nfe.png

Reads every ``metrics.json`` below the folder (Hydra's sweep sub-folders), sorts the rows by N'
and writes the files into the folder atomically. Runs that differ in more than t0 (other
overrides of the same sweep) are kept apart by their Hydra override string.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ccdf.utils.io import atomic_write

COLUMNS = ("overrides", "t0", "reverse_steps", "num_steps", "nfe", "psnr", "ssim", "init_psnr", "init_ssim", "seconds")
METRICS = ("psnr", "ssim")


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of every ``metrics.json`` under ``folder`` (with the run's Hydra overrides, if recorded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {folder}")
    rows = []
    for path in sorted(folder.rglob("metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {path}: {err}") from err
        overrides_file = path.parent / ".hydra" / "overrides.yaml"
        overrides = ""
        if overrides_file.is_file():
            lines = [ln.strip()[2:] for ln in overrides_file.read_text().splitlines() if ln.strip().startswith("- ")]
            overrides = " ".join(o for o in lines if not o.startswith(("sampler.t0=", "hydra.")))
        rows.append(
            {"overrides": overrides, **{k: m.get(k) for k in COLUMNS if k != "overrides"}, "run": str(path.parent)}
        )
    if not rows:
        raise ValueError(f"no metrics.json under {folder}: is it a finished sweep folder?")
    rows.sort(key=lambda r: (r["overrides"], r["reverse_steps"] or 0))
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "run"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| overrides | t0 | N' | NFE | PSNR | SSIM | init PSNR | init SSIM | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['overrides'] or '-'} | {r['t0']:g} | {r['reverse_steps']} | {r['nfe']:g} | {r['psnr']:.2f} | "
        f"{r['ssim']:.4f} | {r['init_psnr']:.2f} | {r['init_ssim']:.4f} | {r['seconds']:.1f} |\n"
        for r in rows
    )
    return head + body


def plot(rows: list[dict[str, Any]], folder: Path) -> list[Path]:
    """``<metric>_vs_reverse_steps.png`` and ``<metric>_vs_nfe.png``, one line per override group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["overrides"] or "default", []).append(r)
    for metric in METRICS:
        for x_key, x_label in (("reverse_steps", "N' (reverse steps)"), ("nfe", "network evaluations")):
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for name, group in groups.items():
                line = ax.plot([g[x_key] for g in group], [g[metric] for g in group], "o-", label=name)
                ax.axhline(group[0][f"init_{metric}"], color=line[0].get_color(), ls="--", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
            ax.set_title(f"{metric.upper()} against {x_label} (dashed: initializer)", fontsize=9)
            if len(groups) > 1:
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"{metric}_vs_{x_key}.png"
            written.append(atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120)))
            plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sweep folder (e.g. outputs/multiruns/inpaint/<time>)")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.folder)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    folder = Path(args.folder)
    atomic_write(folder / "summary.csv", lambda tmp: tmp.write_text(to_csv(rows)))
    md = to_markdown(rows)
    atomic_write(folder / "summary.md", lambda tmp: tmp.write_text(md))
    plot(rows, folder)
    print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
