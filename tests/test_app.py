"""End to end through the Hydra app (subprocess, as a user runs it): outputs, metrics, errors."""

from __future__ import annotations

import math
import os

import pytest
from PIL import Image

from tests.helpers import metrics, run_app

pytestmark = pytest.mark.e2e  # every test here runs `python run.py` (make test-e2e)

KEYS = {
    "task",
    "t0",
    "num_steps",
    "reverse_steps",
    "nfe",
    "seconds",
    "psnr",
    "ssim",
    "init_psnr",
    "init_ssim",
    "per_image",
}


def test_demo_inpaint_beats_initializer(tmp_path):
    """The README's demo command at full size: reconstruction PSNR above the initializer's."""
    run_dir = tmp_path / "run"
    proc = run_app("task=inpaint", "sampler.t0=0.1", f"hydra.run.dir={run_dir}")
    m = metrics(run_dir)
    assert KEYS <= set(m)
    assert m["task"] == "inpaint" and m["t0"] == 0.1 and m["num_steps"] == 1000
    assert m["reverse_steps"] == 100 and m["nfe"] == 100
    assert len(m["per_image"]) == m["num_images"] == 4
    assert m["psnr"] > m["init_psnr"] + 1.0, (m["psnr"], m["init_psnr"])
    assert m["dc_residual"] < 1e-5
    assert (run_dir / "grid.png").is_file() and len(list((run_dir / "recon").glob("*.png"))) == 4
    with Image.open(run_dir / "grid.png") as grid:
        assert grid.size[0] > 4 * 256
    assert "PSNR" in proc.stderr + proc.stdout


@pytest.mark.parametrize("task,extra", [("sr4", []), ("sr16", []), ("mri", [])])
def test_tasks_are_consistent_with_measurements(tmp_path, task, extra):
    run_dir = tmp_path / "run"
    run_app(f"task={task}", "debug=smoke", f"hydra.run.dir={run_dir}", *extra)
    m = metrics(run_dir)
    assert m["task"] == task and math.isfinite(m["psnr"]) and math.isfinite(m["ssim"])
    assert m["dc_residual"] < 1e-4, m["dc_residual"]
    if task == "mri":
        assert m["nfe"] == 2 * m["reverse_steps"]  # predictor + corrector
        assert "nmse" in m and len(list((run_dir / "recon").glob("*.npy"))) == 1


def test_same_seed_same_output(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    run_app("task=inpaint", "debug=smoke", f"hydra.run.dir={a}")
    run_app("task=inpaint", "debug=smoke", f"hydra.run.dir={b}")
    run_app("task=inpaint", "debug=smoke", "seed=1", f"hydra.run.dir={c}")
    for p in sorted((a / "recon").glob("*.png")):
        assert p.read_bytes() == (b / "recon" / p.name).read_bytes()
    assert metrics(a)["psnr"] == metrics(b)["psnr"]
    assert metrics(a)["psnr"] != metrics(c)["psnr"]


def test_batch_size_does_not_change_results(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_app("task=inpaint", "debug=smoke", "batch_size=1", f"hydra.run.dir={a}")
    run_app("task=inpaint", "debug=smoke", "batch_size=2", f"hydra.run.dir={b}")
    pa, pb = metrics(a)["per_image"], metrics(b)["per_image"]
    assert [r["psnr"] for r in pa] == pytest.approx([r["psnr"] for r in pb], abs=1e-9)


def test_multirun_sweep_over_t0(tmp_path):
    sweep = tmp_path / "sweep"
    run_app("-m", "task=inpaint", "debug=smoke", "sampler.t0=0.05,0.2", f"hydra.sweep.dir={sweep}")
    ts = sorted(metrics(d)["t0"] for d in sweep.iterdir() if (d / "metrics.json").exists())
    assert ts == [0.05, 0.2]
    # the aggregation step: a table sorted by N' and plots against N' and NFE
    from ccdf.aggregate import main as aggregate

    assert aggregate([str(sweep)]) == 0
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("overrides,t0,reverse_steps") and len(rows) == 3
    assert [float(r.split(",")[1]) for r in rows[1:]] == [0.05, 0.2]
    assert "| 0.2 | 20 | 20 |" in (sweep / "summary.md").read_text()
    for name in ("psnr_vs_reverse_steps.png", "psnr_vs_nfe.png", "ssim_vs_reverse_steps.png"):
        assert (sweep / name).stat().st_size > 1000
    assert aggregate([str(tmp_path / "nothing")]) == 1


def test_own_image_folder(tmp_path):
    """RGBA, grayscale and non-square images are converted; dataset=folder dataset.root=PATH."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGBA", (90, 60), (200, 10, 10, 128)).save(folder / "a.png")
    Image.new("L", (64, 80), 77).save(folder / "b.jpg")
    run_dir = tmp_path / "run"
    run_app(
        "task=sr4",
        "dataset=folder",
        f"dataset.root={folder}",
        "dataset.size=32",
        "sampler.num_steps=50",
        f"hydra.run.dir={run_dir}",
    )
    m = metrics(run_dir)
    assert [r["name"] for r in m["per_image"]] == ["a", "b"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task=inpaint", "sampler.t0=0"], "t0 must be in (0, 1]"),
        (["task=inpaint", "sampler.t0=1.5"], "t0 must be in (0, 1]"),
        (["task=nosuchtask"], "Could not find 'task/nosuchtask'"),
        ([], "You must specify 'task'"),
        (["task=inpaint", "dataset=folder", "dataset.root=/no/such/folder"], "image folder not found: /no/such/folder"),
        (["task=sr16", "dataset.size=100"], "not divisible by the super-resolution factor 16"),
        (["task=sr4", "model=iddpm_ffhq256"], "missing required value(s): model.ckpt"),
        (["task=sr4", "model=iddpm_ffhq256", "model.ckpt=/no/such/ffhq_10m.pt"], "/no/such/ffhq_10m.pt"),
        (
            ["task=inpaint", "operator=inpaint_box", "operator.image_size=32", "operator.box_size=8", "debug=smoke"],
            "Inpainting expects [B, C, 32, 32] tensors, got shape (2, 3, 64, 64)",
        ),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, overrides, message):
    run_dir = tmp_path / "out" / "run"
    proc = run_app(*overrides, f"hydra.run.dir={run_dir}", ok=False)
    assert message in proc.stderr + proc.stdout, (proc.stdout + proc.stderr)[-2000:]
    assert not run_dir.exists(), list(run_dir.rglob("*"))


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_app(
        "task=inpaint",
        "dataset=folder",
        f"dataset.root={tmp_path / 'empty'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        ok=False,
    )
    assert "no .png/.jpg/.jpeg/.bmp/.webp files in" in proc.stderr + proc.stdout


def test_loggers_csv_and_wandb_offline(tmp_path):
    """logger=many: CSV metrics with N' as the step, and an offline W&B run (no key, no network)."""
    run_dir = tmp_path / "run"
    env_key = os.environ.pop("WANDB_API_KEY", None)
    try:
        run_app("task=inpaint", "debug=smoke", "logger=many", f"hydra.run.dir={run_dir}")
    finally:
        if env_key is not None:
            os.environ["WANDB_API_KEY"] = env_key
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    record = dict(zip(header, values, strict=True))
    assert float(record["step"]) == metrics(run_dir)["reverse_steps"]
    assert float(record["test/psnr"]) == pytest.approx(metrics(run_dir)["psnr"])
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
