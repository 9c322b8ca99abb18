"""The paper's tables: what each row runs, the runner (Hydra multiruns of ``run.py``) and the aggregator.

    python -m ccdf.tables run sr_ffhq --small              # every row on the CPU, then the table
    python -m ccdf.tables run sr_ffhq dataset.root=DIR     # the paper's scale (checkpoints in checkpoints/)
    python -m ccdf.tables run sr_ffhq --small --dry-run    # only print the run.py command lines
    python -m ccdf.tables show sr_ffhq --small             # the table of finished runs

``experiments/paper_tables/run.sh TABLE`` calls these. A table is a list of rows (methods) by a
list of columns (scale factors, masks, accelerations), each cell a few metrics; both are data, the
``paper_table`` node of the experiment config that pins the table (``conf/experiment/<table>.yaml``,
``<table>_small.yaml``; :func:`load_tables`). Every row is one
``python run.py -m experiment=<table>[_small] <row overrides>`` that sweeps the columns (or one such
command per column, when a column sets more than one key); its runs go to ``<out>/<row key>/``. A
row marked ``init_of`` runs nothing: it is the initializer of another row's runs (their ``init_*``
metrics, NFE 0). The aggregator finds each cell's run by the column's overrides in the run's
``.hydra/overrides.yaml`` (:func:`ccdf.runs.read_runs`) and writes ``table.md`` and ``table.csv``
next to the runs. Metrics a run does not have (FID/KID/LPIPS without their weights) print as "–".

No Hydra here: the runs are subprocesses, and their folders are read as plain JSON/YAML.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccdf.runs import Run, csv_text, markdown_table, read_runs
from ccdf.utils.io import atomic_write

MISSING = "–"
METRIC_NAMES = {"fid": "FID", "kid": "KID", "lpips": "LPIPS", "psnr": "PSNR", "ssim": "SSIM", "nmse": "NMSE"}
METRIC_FORMATS = {"fid": ".2f", "kid": ".4f", "lpips": ".4f", "psnr": ".2f", "ssim": ".4f", "nmse": ".4f"}
#: OMP_NUM_THREADS of the small variants' runs unless the environment sets it: on a CPU shared with
#: other processes, one thread per run was 3.5x faster than two threads contending for 2 cores
#: (demo prior, 4 images at 128x128: 0.7 s against 2.5 s per step). On an idle machine, set more.
SMALL_THREADS = "1"


@dataclass(frozen=True)
class Row:
    """One method of a table.

    Args:
        key: the row's folder under the table's output folder.
        label: the method as printed; ``{init}`` (the variant's initializer) and the fields
            ``{t0}``, ``{num_steps}``, ``{reverse_steps}`` of the row's first run may appear.
        overrides: Hydra overrides on top of the table's experiment config.
        init_of: run nothing; report the initializer of that row's runs (NFE 0).
    """

    key: str
    label: str
    overrides: tuple[str, ...] = ()
    init_of: str | None = None


@dataclass(frozen=True)
class Column:
    """One column group of a table: a label and the overrides that select it (e.g. ``task=sr8``)."""

    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """A table at one scale: its experiment config, initializer name, rows, columns and data note."""

    experiment: str
    init: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    note: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    metrics: tuple[str, ...]
    variants: dict[str, Variant] = field(default_factory=dict)


def load_tables(experiment_dir: str | Path | None = None) -> dict[str, Table]:
    """Every paper table pinned by ``conf/experiment/*.yaml``: the ``paper_table`` node of each config
    (``<table>.yaml`` the full scale, ``<table>_small.yaml`` the small variant).

    The node: ``name``, ``title``, ``metrics``, ``init`` (the initializer as printed), optional
    ``note``, ``columns`` (``label``, ``overrides``) and ``rows`` (``key``, ``label``, optional
    ``overrides`` and ``init_of``); see :class:`Row` and :class:`Column`.
    """
    import yaml

    folder = Path(experiment_dir) if experiment_dir is not None else repo_root() / "conf" / "experiment"
    found: dict[str, Table] = {}
    for path in sorted(folder.glob("*.yaml")):
        node = (yaml.safe_load(path.read_text()) or {}).get("paper_table")
        if node is None:
            continue
        try:
            name, title, metrics = str(node["name"]), str(node["title"]), tuple(str(m) for m in node["metrics"])
            var = Variant(
                path.stem,
                str(node["init"]),
                tuple(
                    Row(
                        str(r["key"]),
                        str(r["label"]),
                        tuple(str(o) for o in r.get("overrides") or ()),
                        r.get("init_of"),
                    )
                    for r in node["rows"]
                ),  # fmt: skip
                tuple(Column(str(c["label"]), tuple(str(o) for o in c["overrides"])) for c in node["columns"]),
                str(node.get("note", "")),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(
                f"{path}: paper_table needs name, title, metrics, init, columns (label, overrides) and rows "
                f"(key, label[, overrides, init_of]); {type(err).__name__}: {err}"
            ) from err
        keys = [r.key for r in var.rows]
        bad = [r.init_of for r in var.rows if r.init_of and r.init_of not in keys]
        if len(set(keys)) != len(keys) or bad or not var.columns:
            raise ValueError(f"{path}: paper_table rows need unique keys, init_of a row key (got {bad}), columns")
        variant = "small" if path.stem.endswith("_small") else "full"
        table = found.setdefault(name, Table(name, title, metrics, {}))
        if (table.title, table.metrics) != (title, metrics) or variant in table.variants:
            raise ValueError(f"{path}: paper_table {name!r} ({variant}) repeats a variant or differs in title/metrics")
        table.variants[variant] = var
    return found


def get_table(name: str) -> Table:
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {sorted(TABLES)}")
    return TABLES[name]


def get_variant(table: Table, variant: str) -> Variant:
    if variant not in table.variants:
        raise ValueError(f"table {table.name} has no variant {variant!r}; choose one of {sorted(table.variants)}")
    return table.variants[variant]


def default_out(root: Path, table: str, variant: str) -> Path:
    """``<root>/outputs/paper_tables/<table>/<variant>``."""
    return root / "outputs" / "paper_tables" / table / variant


# ----------------------------------------------------------------------------------------------
# Running


def row_commands(table: Table, variant: str, out: Path, extra: list[str] | tuple[str, ...] = ()) -> list[list[str]]:
    """The ``run.py -m`` argument lists of every row that runs (without the interpreter and script).

    One command per row sweeps the columns when each column sets one value of the same key;
    otherwise there is one command per (row, column), in ``<out>/<row>/<column index>``.
    Runs share the per-image result cache ``<out>/cache``; ``extra`` overrides come last.
    """
    var = get_variant(table, variant)
    keys = {tuple(o.split("=", 1)[0] for o in c.overrides) for c in var.columns}
    sweepable = all(len(c.overrides) == 1 for c in var.columns) and len(keys) == 1
    common = [f"experiment={var.experiment}", f"eval.cache_dir={out / 'cache'}"]
    commands = []
    for row in var.rows:
        if row.init_of:
            continue
        if sweepable:
            key = next(iter(keys))[0]
            values = ",".join(c.overrides[0].split("=", 1)[1] for c in var.columns)
            sweep = [f"{key}={values}", f"hydra.sweep.dir={out / row.key}"]
            commands.append(["-m", *common, *row.overrides, *sweep, *extra])
        else:
            for j, col in enumerate(var.columns):
                commands.append(
                    ["-m", *common, *row.overrides, *col.overrides, f"hydra.sweep.dir={out / row.key / str(j)}", *extra]
                )
    return commands


def run_table(name: str, variant: str, *, out: Path | None = None, extra: list[str] | tuple[str, ...] = (),
              dry_run: bool = False, root: Path | None = None) -> int:  # fmt: skip
    """Run every row of a table (old runs of its rows are removed first), then print and write it."""
    table = get_table(name)
    root = root or repo_root()
    out = (out or default_out(root, name, variant)).resolve()
    commands = row_commands(table, variant, out, extra)
    if dry_run:
        for args in commands:
            print(shlex.join(["python", "run.py", *args]))
        return 0
    env = dict(os.environ)
    if variant == "small":  # see SMALL_THREADS
        env.setdefault("OMP_NUM_THREADS", SMALL_THREADS)
    tic = time.perf_counter()
    for row in get_variant(table, variant).rows:
        if not row.init_of and (out / row.key).exists():
            shutil.rmtree(out / row.key)
    for args in commands:
        cmd = [sys.executable, str(root / "run.py"), *args]
        print("+ " + shlex.join(["python", "run.py", *args]), flush=True)
        proc = subprocess.run(cmd, cwd=root, env=env)
        if proc.returncode != 0:
            print(f"error: this command failed (exit {proc.returncode}); the table is not written", file=sys.stderr)
            return proc.returncode
    print(f"\n{name} ({variant}): all rows ran in {time.perf_counter() - tic:.0f} s\n", flush=True)
    return show_table(name, variant, out=out)


def repo_root() -> Path:
    """The folder holding ``run.py``: the checkout this package lives in, else the working directory."""
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (candidate / "run.py").is_file():
            return candidate
    raise FileNotFoundError("run.py not found: run this from the ccdf repository root")


def _load_or_none() -> dict[str, Table]:
    try:
        return load_tables()
    except FileNotFoundError:  # ccdf installed without its checkout: no configs, no tables
        return {}


#: The paper tables, from ``conf/experiment/*.yaml`` (:func:`load_tables`).
TABLES: dict[str, Table] = _load_or_none()


# ----------------------------------------------------------------------------------------------
# Reading runs and formatting


def cell_runs(table: Table, variant: str, out: Path) -> dict[str, list[Run]]:
    """For each row key, its run per column (in column order); a clear error for what is missing."""
    var = get_variant(table, variant)
    by_key = {r.key: r for r in var.rows}
    hint = f"run experiments/paper_tables/run.sh {table.name}{' --small' if variant == 'small' else ''} first"
    if not out.is_dir():
        raise FileNotFoundError(f"{table.name} ({variant}): no runs in {out} (folder not found); {hint}")
    cells: dict[str, list[Run]] = {}
    for row in var.rows:
        source = by_key[row.init_of] if row.init_of else row
        if source.key in cells:
            cells[row.key] = cells[source.key]
            continue
        folder = out / source.key
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{table.name} ({variant}): no runs of row {source.key!r}: {folder} not found; {hint}"
            )
        runs = read_runs(folder, require_overrides=True)
        picked = []
        for col in var.columns:
            match = [r for r in runs if set(col.overrides) <= set(r.overrides)]
            if not match:
                raise FileNotFoundError(
                    f"{table.name} ({variant}): row {source.key!r} has no finished run for column {col.label} "
                    f"({' '.join(col.overrides)}) in {folder}; {hint}"
                )
            if len(match) > 1:
                raise ValueError(
                    f"{table.name} ({variant}): row {source.key!r} has {len(match)} runs for column {col.label}: "
                    + ", ".join(str(r.path) for r in match)
                )
            picked.append(match[0])
        cells[source.key] = cells[row.key] = picked
    return cells


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def collect(name: str, variant: str, out: Path) -> list[dict[str, Any]]:
    """One record per row: ``label``, ``nfe`` and ``values[column label][metric]`` (None when absent)."""
    table = get_table(name)
    var = get_variant(table, variant)
    cells = cell_runs(table, variant, out)
    records = []
    for row in var.rows:
        runs = cells[row.key]
        prefix = "init_" if row.init_of else ""
        first = runs[0].metrics
        fields = {k: first.get(k) for k in ("t0", "num_steps", "reverse_steps")}
        try:
            label = row.label.format(init=var.init, **fields)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"row {row.key!r}: cannot fill its label from {runs[0].path}: {err}") from err
        nfes = sorted({0.0} if row.init_of else {v for r in runs if (v := _number(r.metrics.get("nfe"))) is not None})
        values = {
            col.label: {m: _number(run.metrics.get(prefix + m)) for m in table.metrics}
            for col, run in zip(var.columns, runs, strict=True)
        }
        records.append({"row": row.key, "label": label, "nfe": nfes, "values": values})
    return records


def _fmt(value: float | None, metric: str) -> str:
    return MISSING if value is None else format(value, METRIC_FORMATS.get(metric, ".4g"))


def _fmt_nfe(nfes: list[float]) -> str:
    return " / ".join(f"{n:g}" for n in nfes) if nfes else MISSING


def to_markdown(name: str, variant: str, records: list[dict[str, Any]]) -> str:
    """The table in the paper's layout: rows = methods with their NFE, columns = column × metric."""
    table = get_table(name)
    var = get_variant(table, variant)
    heads = [f"{c.label} {METRIC_NAMES.get(m, m)}" for c in var.columns for m in table.metrics]
    rows = [
        [
            rec["label"],
            _fmt_nfe(rec["nfe"]),
            *[_fmt(rec["values"][c.label][m], m) for c in var.columns for m in table.metrics],
        ]
        for rec in records
    ]
    title = (
        f"{table.title} — {variant} ({var.experiment}{': ' + var.note if var.note else ''}); "
        f'mean over images, "{MISSING}": metric not computed'
    )
    return f"{title}\n\n" + markdown_table(["method", "NFE", *heads], rows, right_from=1)


def to_csv(name: str, variant: str, records: list[dict[str, Any]]) -> str:
    """The same table as CSV, numbers at full precision, empty where a metric is missing."""
    table = get_table(name)
    var = get_variant(table, variant)
    header = ["row", "method", "nfe", *[f"{c.label} {m}" for c in var.columns for m in table.metrics]]
    rows = []
    for rec in records:
        vals = [rec["values"][c.label][m] for c in var.columns for m in table.metrics]
        nfe = "/".join(f"{n:g}" for n in rec["nfe"])
        rows.append([rec["row"], rec["label"], nfe, *["" if v is None else repr(v) for v in vals]])
    return csv_text(header, rows)


def show_table(name: str, variant: str, *, out: Path | None = None) -> int:
    """Print a finished table and write ``table.md`` / ``table.csv`` into its folder (atomically)."""
    out = (out or default_out(repo_root(), name, variant)).resolve()
    records = collect(name, variant, out)
    md = to_markdown(name, variant, records)
    atomic_write(out / "table.md", lambda tmp: tmp.write_text(md))
    atomic_write(out / "table.csv", lambda tmp: tmp.write_text(to_csv(name, variant, records)))
    print(md, end="")
    print(f"\n-> {out / 'table.md'}, {out / 'table.csv'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "show"), help="run the rows then show, or only show")
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--small", action="store_true", help="the small CPU variant (embedded models)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default outputs/paper_tables/...)")
    parser.add_argument("--dry-run", action="store_true", help="run: print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every row (run only)")
    args = parser.parse_intermixed_args(argv)
    variant = "small" if args.small else "full"
    try:
        if args.action == "run":
            return run_table(args.table, variant, out=args.out, extra=args.overrides, dry_run=args.dry_run)
        if args.overrides:
            parser.error("overrides are for `run`")
        return show_table(args.table, variant, out=args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
