"""The paper tables: every experiment config composes with every cell's overrides, the runner's
commands, and the aggregator's layout, missing metrics and missing runs (synthetic run folders)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import OmegaConf

from ccdf import tables
from ccdf.tables import MISSING, TABLES, Column, Row, Table, Variant
from tests.helpers import ROOT

CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_every_table_has_its_two_experiments_and_one_runner():
    named = {v.experiment for t in TABLES.values() for v in t.variants.values()}
    assert named == set(EXPERIMENTS)
    assert set(TABLES) == {"sr_ffhq", "sr_afhq", "inpaint_ffhq", "mri_knee"}
    for name, table in TABLES.items():
        assert set(table.variants) == {"full", "small"} and table.name == name
        assert table.variants["small"].experiment == f"{name}_small" and table.variants["full"].experiment == name
    folder = ROOT / "experiments" / "paper_tables"
    assert (folder / "run.sh").is_file() and not [p for p in folder.iterdir() if p.is_dir()]  # one runner, no wrappers


def test_rows_and_columns_are_read_from_the_experiment_config(tmp_path):
    """ccdf.tables.load_tables: the paper_table node of conf/experiment/*.yaml is the table (rows, columns, labels)."""
    (tmp_path / "toy.yaml").write_text(
        "# @package _global_\nsampler:\n  t0: 0.2\npaper_table:\n  name: toy\n  title: Toy\n  metrics: [psnr]\n"
        "  init: bicubic\n  columns:\n    - {label: x4, overrides: [task=sr4]}\n"
        "  rows:\n    - {key: init, label: '{init} alone', init_of: ccdf}\n"
        "    - {key: noise, label: noise, overrides: [sampler.t0=1, '~initializer.ckpt']}\n"
        "    - {key: ccdf, label: CCDF}\n"
    )
    (tmp_path / "plain.yaml").write_text("# @package _global_\nseed: 3\n")  # not a table: ignored
    loaded = tables.load_tables(tmp_path)
    assert list(loaded) == ["toy"] and list(loaded["toy"].variants) == ["full"]
    var = loaded["toy"].variants["full"]
    assert var == Variant(
        "toy",
        "bicubic",
        (Row("init", "{init} alone", init_of="ccdf"), Row("noise", "noise", ("sampler.t0=1", "~initializer.ckpt")),
         Row("ccdf", "CCDF")),
        (Column("x4", ("task=sr4",)),),
    )  # fmt: skip
    (tmp_path / "toy_small.yaml").write_text("paper_table:\n  name: toy\n  title: Toy\n  metrics: [psnr]\n")
    with pytest.raises(ValueError, match=r"toy_small.yaml: paper_table needs name, title, metrics, init"):
        tables.load_tables(tmp_path)
    (tmp_path / "toy_small.yaml").write_text(
        "paper_table:\n  name: toy\n  title: Toy\n  metrics: [psnr]\n  init: x\n"
        "  columns: [{label: a, overrides: [task=sr4]}]\n  rows: [{key: a, label: a, init_of: nope}]\n"
    )
    with pytest.raises(ValueError, match=r"toy_small.yaml: .*init_of a row key \(got \['nope'\]\)"):
        tables.load_tables(tmp_path)


@pytest.mark.e2e  # bash run.sh subprocesses (make test-e2e)
def test_runner_script_runs_and_shows_any_table(tmp_path):
    import subprocess

    script = ROOT / "experiments" / "paper_tables" / "run.sh"
    proc = subprocess.run([script, "inpaint_ffhq", "--small", "--dry-run", "seed=2"], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 3 * 2, proc.stderr  # 3 rows that run x 2 two-key columns
    assert all(
        ln.startswith("python run.py -m experiment=inpaint_ffhq_small ") and ln.endswith(" seed=2") for ln in lines
    )
    proc = subprocess.run(
        [script, "sr_ffhq", "--show", "--small", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "run experiments/paper_tables/run.sh sr_ffhq --small first" in proc.stderr
    assert subprocess.run([script], capture_output=True).returncode == 2


def cells():
    """Every cell of every table; make test keeps, per table variant, the cells that first reach a row or a
    column (every row and every column composes at least once), make test-e2e runs the rest."""
    for name, table in TABLES.items():
        for variant, var in table.variants.items():
            seen: set[tuple[str, str]] = set()
            for row in var.rows:
                if row.init_of:
                    continue
                for col in var.columns:
                    new = {("row", row.key), ("col", col.label)} - seen
                    seen |= new
                    yield pytest.param(name, variant, row, col, marks=() if new else pytest.mark.e2e,
                                       id=f"{name}-{variant}-{row.key}-{col.label}")  # fmt: skip


@pytest.mark.parametrize("name,variant,row,col", list(cells()))
def test_every_cell_composes(name, variant, row, col):
    from ccdf.app import missing_values

    var = TABLES[name].variants[variant]
    cfg = compose_cfg([f"experiment={var.experiment}", *row.overrides, *col.overrides])
    HydraConfig.instance().set_config(cfg)
    # the full scale needs only the data folder; the small variant runs as composed
    assert missing_values(cfg) == ([] if variant == "small" else ["dataset.root"])
    for key in ("model", "operator", "initializer", "sampler", "eval"):
        OmegaConf.to_container(cfg[key], resolve=True)
    choices = cfg.hydra.runtime.choices
    for o in (*row.overrides, *col.overrides):  # the cell's own settings are what runs
        if o.startswith("~"):
            assert OmegaConf.select(cfg, o[1:]) is None
            continue
        key, value = o.split("=", 1)
        got = choices[key] if key in choices else OmegaConf.select(cfg, key)
        assert str(got) == value, (key, got, value)
    for group in ("operator", "initializer"):  # no key left over from another group's option
        node = OmegaConf.to_container(cfg[group])
        params = inspect.signature(get_object(node.pop("_target_"))).parameters
        assert set(node) <= set(params), (group, set(node) - set(params))
    if variant == "small" and "fid" in TABLES[name].metrics:
        assert cfg.eval.fid is False  # FID of a handful of images means nothing


def test_experiment_pins_win_over_the_task_and_lose_to_the_command_line():
    cfg = compose_cfg(["experiment=sr_ffhq_small", "task=sr16"])
    ch = cfg.hydra.runtime.choices
    assert (ch.task, ch.model, ch.initializer, ch.dataset) == ("sr16", "demo_prior", "bicubic", "samples_crops")
    assert cfg.operator.factor == 16 and cfg.dataset.size == 128 and cfg.sampler.num_steps == 100
    cfg = compose_cfg(["experiment=sr_ffhq", "task=sr8"])
    ch = cfg.hydra.runtime.choices
    assert (ch.model, ch.initializer, ch.dataset) == ("iddpm_ffhq256", "esrgan", "ffhq256")  # not task's bicubic
    assert cfg.initializer.ckpt == "checkpoints/esrgan_ffhq256_x8.pth" and cfg.model.schedule.spacing == "iddpm"
    assert cfg.dataset.eval_split == "ffhq_eval.txt"
    cfg = compose_cfg(["experiment=mri_knee_small", "initializer=zero", "sampler.t0=1"])
    assert cfg.hydra.runtime.choices.initializer == "zero" and cfg.sampler.t0 == 1
    assert cfg.hydra.runtime.choices.sampler == "ve_pc" and cfg.hydra.runtime.choices.task == "mri"


@pytest.mark.parametrize("name", ["sr_ffhq_small", "inpaint_ffhq_small", "mri_knee_small", "sr_afhq_small"])
def test_small_experiments_instantiate(name):
    from hydra.utils import instantiate

    cfg = compose_cfg([f"experiment={name}"])
    op = instantiate(cfg.operator)
    x0 = instantiate(cfg.dataset.data)[0]["x0"][None]
    assert instantiate(cfg.initializer)(op(x0), op).shape == x0.shape


def test_commands_sweep_one_key_per_row_or_run_each_cell(tmp_path):
    cmds = tables.row_commands(TABLES["sr_ffhq"], "small", tmp_path, ["seed=1"])
    assert len(cmds) == 3  # noise_full, noise_short, ccdf; the initializer row runs nothing
    for cmd in cmds:
        assert cmd[:2] == ["-m", "experiment=sr_ffhq_small"] and "task=sr4,sr8,sr16" in cmd and cmd[-1] == "seed=1"
    assert f"hydra.sweep.dir={tmp_path / 'ccdf'}" in cmds[-1]
    cmds = tables.row_commands(TABLES["mri_knee"], "full", tmp_path)
    assert len(cmds) == 4 * 2  # two-key columns: one command per cell
    assert cmds[1][-3:] == ["operator.acceleration=8", "operator.center_fraction=0.04", f"hydra.sweep.dir={tmp_path / 'noise_full' / '1'}"]  # fmt: skip


# ---- the aggregator, on synthetic run folders -------------------------------------------------

TOY = Table(
    "toy",
    "Toy table",
    ("fid", "psnr", "ssim"),
    {
        "small": Variant(
            "toy_small",
            "bicubic",
            (
                Row("init", "{init} (initializer alone)", init_of="ccdf"),
                Row("noise", "from noise, N = {num_steps}", ("sampler.t0=1",)),
                Row("ccdf", "CCDF from {init}, t0 = {t0:g} (N' = {reverse_steps} of {num_steps})"),
            ),
            (Column("×4", ("task=sr4",)), Column("×8", ("task=sr8", "operator.kernel=box"))),
        )
    },
)


def fake_run(folder: Path, overrides: list[str], **metrics) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setitem(TABLES, "toy", TOY)
    base = {"num_steps": 100, "init_psnr": 20.0, "init_ssim": 0.5}
    fake_run(tmp_path / "noise" / "0", ["experiment=toy_small", "sampler.t0=1", "task=sr4"],
             **base, t0=1.0, reverse_steps=100, nfe=100, psnr=21.0, ssim=0.6)  # fmt: skip
    fake_run(tmp_path / "noise" / "1", ["experiment=toy_small", "sampler.t0=1", "task=sr8", "operator.kernel=box"],
             **base, t0=1.0, reverse_steps=100, nfe=100, psnr=19.5, ssim=0.45)  # fmt: skip
    fake_run(tmp_path / "ccdf" / "0", ["experiment=toy_small", "task=sr4"], **base, t0=0.2, reverse_steps=20,
             nfe=20, psnr=25.123, ssim=0.71234, fid=12.345, init_fid=30.0)  # fmt: skip
    fake_run(tmp_path / "ccdf" / "1", ["task=sr8", "operator.kernel=box"], **{**base, "init_psnr": 18.0},
             t0=0.2, reverse_steps=20, nfe=20, psnr=22.0, ssim=float("nan"))  # fmt: skip
    return tmp_path


def test_table_layout_and_cells(toy):
    records = tables.collect("toy", "small", toy)
    md = tables.to_markdown("toy", "small", records).splitlines()
    assert md[2] == "| method | NFE | ×4 FID | ×4 PSNR | ×4 SSIM | ×8 FID | ×8 PSNR | ×8 SSIM |"
    assert md[3] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert md[4] == "| bicubic (initializer alone) | 0 | 30.00 | 20.00 | 0.5000 | – | 18.00 | 0.5000 |"
    assert md[5] == "| from noise, N = 100 | 100 | – | 21.00 | 0.6000 | – | 19.50 | 0.4500 |"
    assert md[6] == "| CCDF from bicubic, t0 = 0.2 (N' = 20 of 100) | 20 | 12.35 | 25.12 | 0.7123 | – | 22.00 | – |"
    assert len(md) == 7 and MISSING == "–"
    csv_lines = tables.to_csv("toy", "small", records).splitlines()
    assert csv_lines[0] == "row,method,nfe,×4 fid,×4 psnr,×4 ssim,×8 fid,×8 psnr,×8 ssim"
    assert csv_lines[3] == 'ccdf,"CCDF from bicubic, t0 = 0.2 (N\' = 20 of 100)",20,12.345,25.123,0.71234,,22.0,'


def test_show_writes_table_files(toy, capsys):
    assert tables.show_table("toy", "small", out=toy) == 0
    printed = capsys.readouterr().out
    assert (toy / "table.md").read_text() in printed
    assert (toy / "table.csv").read_text().startswith("row,method,nfe")
    assert not list(toy.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_missing_run_folder_is_a_clear_error(toy, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no runs of row 'noise'.*run experiments/paper_tables/run.sh toy --small"
    ):
        import shutil

        shutil.rmtree(toy / "noise")
        tables.collect("toy", "small", toy)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        tables.collect("toy", "small", tmp_path / "nowhere")
    assert tables.main(["show", "sr_ffhq", "--small", "--out", str(tmp_path / "nowhere")]) == 1


def test_missing_column_and_duplicate_runs_are_errors(toy):
    import shutil

    shutil.rmtree(toy / "ccdf" / "1")
    with pytest.raises(
        FileNotFoundError, match=r"row 'ccdf' has no finished run for column ×8 \(task=sr8 operator.kernel=box\)"
    ):
        tables.collect("toy", "small", toy)
    fake_run(toy / "ccdf" / "1", ["task=sr8", "operator.kernel=box"], t0=0.2, num_steps=100, reverse_steps=20, nfe=20)
    fake_run(toy / "ccdf" / "2", ["task=sr8", "operator.kernel=box"], t0=0.2, num_steps=100, reverse_steps=20, nfe=20)
    with pytest.raises(ValueError, match="2 runs for column ×8"):
        tables.collect("toy", "small", toy)


def test_one_run_reader_for_sweeps_and_tables(tmp_path):
    """ccdf.runs.read_runs serves ccdf.aggregate (overrides optional) and ccdf.tables (overrides required)."""
    from ccdf import aggregate
    from ccdf.runs import read_runs

    row = dict(t0=0.2, reverse_steps=20, num_steps=100, nfe=20, psnr=25.0, ssim=0.7, init_psnr=20.0, init_ssim=0.5)
    fake_run(tmp_path / "0", ["task=sr4", "sampler.t0=0.2", "hydra.job.num=0"], **row, seconds=1.0)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "metrics.json").write_text(json.dumps({**row, "t0": 0.1, "reverse_steps": 10, "seconds": 2.0}))
    runs = read_runs(tmp_path)
    assert [(r.path.name, r.overrides) for r in runs] == [
        ("0", ["task=sr4", "sampler.t0=0.2", "hydra.job.num=0"]),
        ("1", []),
    ]
    with pytest.raises(ValueError, match=r"1 has no .hydra/overrides.yaml"):
        read_runs(tmp_path, require_overrides=True)
    rows = aggregate.collect(tmp_path)
    assert [(r["overrides"], r["reverse_steps"]) for r in rows] == [("", 10), ("task=sr4", 20)]
    md = aggregate.to_markdown(rows).splitlines()
    assert md[1] == "|---|---|---|---|---|---|---|---|---|" and md[3].startswith("| task=sr4 | 0.2 | 20 | 20 | 25.00 |")
    assert aggregate.to_csv(rows).splitlines()[1].startswith(",0.1,10,100,20,25.0,0.7,20.0,0.5,2.0,")
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        read_runs(tmp_path / "nowhere")
