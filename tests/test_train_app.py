"""`python run.py mode=train ...`: checkpoints, exact resume, and our weights loading into sampling."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.helpers import TRAIN, metrics, run_app

pytestmark = pytest.mark.e2e  # every test here runs `python run.py` (make test-e2e)


def test_train_resume_and_sample(tmp_path):
    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    run_app(*TRAIN, "training.max_steps=4", "training.ckpt_every=2", f"hydra.run.dir={straight}")
    run_app(*TRAIN, "training.max_steps=2", "training.ckpt_every=2", f"hydra.run.dir={first}")
    run_app(
        *TRAIN,
        "training.max_steps=4",
        "training.ckpt_every=2",
        f"training.resume={first / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={resumed}",
    )
    a = load_file(straight / "checkpoints" / "ema_last.safetensors")
    b = load_file(resumed / "checkpoints" / "ema_last.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert json.loads((resumed / "train.json").read_text())["steps"] == 4
    assert (straight / "checkpoints" / "ema_step0000002.safetensors").is_file()
    assert (straight / "samples" / "step0000004.png").is_file()
    # our checkpoint loads straight into sampling
    run_dir = tmp_path / "sample"
    run_app(
        "task=inpaint",
        "model=unet_small",
        f"model.ckpt={resumed / 'checkpoints' / 'ema_last.safetensors'}",
        "dataset=gaussian_field",
        "dataset.size=16",
        "operator.image_size=16",
        "sampler.num_steps=50",
        f"hydra.run.dir={run_dir}",
    )
    m = metrics(run_dir)
    assert m["model"] == "unet_small" and m["nfe"] == 10 and m["dc_residual"] < 1e-5


def test_train_needs_a_trainable_model(tmp_path):
    proc = run_app("mode=train", "task=inpaint", f"hydra.run.dir={tmp_path / 'run'}", ok=False)
    assert "has no trainable `net`" in proc.stderr + proc.stdout
    assert not (tmp_path / "run").exists()
