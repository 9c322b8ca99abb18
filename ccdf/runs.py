"""Finished ``run.py`` run folders, read as plain files (no Hydra), and the CSV / Markdown tables built from them.

A run folder holds ``metrics.json`` and, when Hydra wrote it, ``.hydra/overrides.yaml`` (the
command-line overrides of that run). :func:`read_runs` is the one reader of
:mod:`ccdf.aggregate` (a sweep's summary) and :mod:`ccdf.tables` (the paper's tables).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """One finished run: its folder, ``metrics.json`` and Hydra overrides (``[]`` when none were recorded)."""

    path: Path
    metrics: dict[str, Any]
    overrides: list[str]


def read_runs(folder: str | Path, *, require_overrides: bool = False) -> list[Run]:
    """Every finished run (a ``metrics.json``) below ``folder``, in path order.

    Args:
        folder: a run, sweep or table folder.
        require_overrides: a run without ``.hydra/overrides.yaml`` is an error (else it has no overrides).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: a file cannot be read, or an overrides file is missing where required.
    """
    import yaml

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    runs = []
    for path in sorted(folder.rglob("metrics.json")):
        over = path.parent / ".hydra" / "overrides.yaml"
        if require_overrides and not over.is_file():
            raise ValueError(f"{path.parent} has no .hydra/overrides.yaml: not a run.py run folder")
        try:
            metrics = json.loads(path.read_text())
            overrides = [str(o) for o in (yaml.safe_load(over.read_text()) or [])] if over.is_file() else []
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read {path.parent}: {err}") from err
        runs.append(Run(path.parent, metrics, overrides))
    return runs


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A CSV table (Excel dialect, ``\\r\\n`` line ends as the csv module writes them)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right_from: int | None = None) -> str:
    """A Markdown table; columns from index ``right_from`` on are right-aligned (``---:``)."""
    align = ["---:" if right_from is not None and i >= right_from else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
