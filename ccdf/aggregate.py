"""Summarise a sweep: one row per run (t0, N', NFE, metrics), as CSV and Markdown, plus plots.

    python -m ccdf.aggregate outputs/multiruns/inpaint/<time>      # writes summary.csv, summary.md,
                                                                    # <metric>_vs_reverse_steps.png, <metric>_vs_nfe.png

Reads every ``metrics.json`` below the folder (Hydra's sweep sub-folders), sorts the rows by N'
and writes the files into the folder atomically. Runs that differ in more than t0 (other
overrides of the same sweep) are kept apart by their Hydra override string.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ccdf.runs import csv_text, markdown_table, read_runs
from ccdf.utils.io import atomic_write

COLUMNS = ("overrides", "t0", "reverse_steps", "num_steps", "nfe", "psnr", "ssim", "init_psnr", "init_ssim", "seconds")
METRICS = ("psnr", "ssim")


def collect(folder: str | Path) -> list[dict[str, Any]]:
    """Rows of every ``metrics.json`` under ``folder`` (with the run's Hydra overrides, if recorded)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {folder}")
    rows = []
    for run in read_runs(folder):
        overrides = " ".join(o for o in run.overrides if not o.startswith(("sampler.t0=", "hydra.")))
        values = {k: run.metrics.get(k) for k in COLUMNS if k != "overrides"}
        rows.append({"overrides": overrides, **values, "run": str(run.path)})
    if not rows:
        raise ValueError(f"no metrics.json under {folder}: is it a finished sweep folder?")
    rows.sort(key=lambda r: (r["overrides"], r["reverse_steps"] or 0))
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    return csv_text([*COLUMNS, "run"], [[r[k] for k in (*COLUMNS, "run")] for r in rows])


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = ["overrides", "t0", "N'", "NFE", "PSNR", "SSIM", "init PSNR", "init SSIM", "seconds"]
    body = [
        [r["overrides"] or "-", f"{r['t0']:g}", str(r["reverse_steps"]), f"{r['nfe']:g}", f"{r['psnr']:.2f}",
         f"{r['ssim']:.4f}", f"{r['init_psnr']:.2f}", f"{r['init_ssim']:.4f}", f"{r['seconds']:.1f}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(head, body)


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
