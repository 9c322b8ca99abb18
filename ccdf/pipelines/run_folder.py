"""What a failed or interrupted run removes from its folder: only what it wrote, never an earlier run's files."""

from __future__ import annotations

import shutil
from pathlib import Path


def earlier_files(run_dir: Path, job_name: str) -> set[Path]:
    """Everything in the run folder before this run started, except Hydra's files of this run
    (``.hydra/`` and ``<job>.log``, which Hydra writes, or appends to, before ``main`` runs)."""
    if not run_dir.is_dir():
        return set()
    own = {run_dir / ".hydra", run_dir / f"{job_name}.log"}
    return {p for p in run_dir.rglob("*") if not any(p == o or o in p.parents for o in own)}


def remove_partial_run(run_dir: Path, written: list[Path], job_name: str, before: set[Path] = frozenset()) -> None:
    """Delete what this failed run wrote: the paths in ``written`` (folders: only the files in them that
    were not in ``before``). When the folder held an earlier run (``before`` not empty) Hydra's
    ``.hydra/`` and log stay; otherwise they go too, and the folder if it is then empty."""
    for path in written:
        if path.is_dir() and not path.is_symlink():
            for sub in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # deepest first
                if sub in before:
                    continue
                if sub.is_dir() and not sub.is_symlink():
                    rmdir_if_empty(sub)
                else:
                    sub.unlink(missing_ok=True)
            if path not in before:
                rmdir_if_empty(path)
        elif path not in before:
            path.unlink(missing_ok=True)
    if before:
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / f"{job_name}.log").unlink(missing_ok=True)
    rmdir_if_empty(run_dir)


def rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()  # only succeeds when empty: never removes anything it did not write
    except OSError:
        pass
