"""Ctrl-C and SIGTERM (a scheduler's time limit) on real `python run.py` processes: training stops with a
checkpoint, keeps its folder, exits 128 + signum and resumes exactly; a reconstruction stops at once, keeps
its finished images in the result cache, exits 143 and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import APP, ROOT, TRAIN, run_app

pytestmark = pytest.mark.e2e  # every test here runs `python run.py` (make test-e2e)

FAST = [*TRAIN, "training.ckpt_every=2", "training.sample_every=0"]


@pytest.fixture
def start():
    """``start(*overrides, log=path)``: ``python run.py`` in the background; killed if a test leaves it running."""
    procs: list[subprocess.Popen] = []

    def run(*overrides: str, log: Path) -> subprocess.Popen:
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "2"}  # as run_app: the same float sums
        cmd = [sys.executable, str(ROOT / "run.py"), *overrides]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT))
        return procs[-1]

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def signal_when(proc: subprocess.Popen, ready, signum: int, timeout: float = 300) -> float:
    """Send ``signum`` once ``ready()`` holds; returns when it was sent."""
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    assert ready(), "the run did not get far enough in time"
    proc.send_signal(signum)
    return time.time()


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_training_keeps_its_checkpoints_exits_nonzero_and_resumes(tmp_path, start, signum, status):
    """Before: the run folder (checkpoints included) was deleted, and SIGTERM ended with status 0."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    proc = start(*FAST, "training.max_steps=100000", f"hydra.run.dir={run}", log=tmp_path / "log.txt")
    signal_when(proc, lambda: (ckpts / "step0000002.ckpt").is_file(), signum)
    assert proc.wait(timeout=120) == status
    out = (tmp_path / "log.txt").read_text()
    assert f"{signal.Signals(signum).name} received: stopping after the current step" in out
    assert {"step0000002.ckpt", "ema_step0000002.safetensors", "last.ckpt"} <= {p.name for p in ckpts.iterdir()}
    assert (run / ".hydra" / "config.yaml").is_file() and not (run / "train.json").exists()
    step = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert step >= 2 and f"training.resume={ckpts / 'last.ckpt'}" in out
    if signum == signal.SIGINT:
        return  # what follows does not depend on the signal (it costs two more runs)
    # resume from the checkpoint written at the interruption for two more steps: bit-exact, the weights of a
    # run that was never interrupted (the same code on the same CPU with the same thread count)
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    run_app(*FAST, f"training.max_steps={step + 2}", f"training.resume={ckpts / 'last.ckpt'}",
            f"hydra.run.dir={resumed}")  # fmt: skip
    assert json.loads((resumed / "train.json").read_text())["steps"] == step + 2
    run_app(*FAST, f"training.max_steps={step + 2}", f"hydra.run.dir={straight}")
    a = load_file(straight / "checkpoints" / "ema_last.safetensors")
    b = load_file(resumed / "checkpoints" / "ema_last.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_sigterm_stops_a_reconstruction_promptly_keeping_finished_images(tmp_path, start):
    """Before: a reconstruction ignored SIGTERM (Lightning's predict loop only records it) and ran to the end."""
    slow = [*APP[:1], "dataset.size=32", *APP[2:], "batch_size=1", "sampler.t0=1", "sampler.num_steps=1000"]
    cache = tmp_path / "cache"
    done = lambda: list(cache.rglob("t0_1/*.json"))  # noqa: E731
    proc = start(*slow, f"hydra.run.dir={tmp_path / 'run'}", f"eval.cache_dir={cache}", log=tmp_path / "log.txt")
    sent = signal_when(proc, lambda: bool(done()), signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    out = (tmp_path / "log.txt").read_text()
    assert "interrupted by SIGTERM" in out
    stamp = out.split("][ccdf][WARNING] - interrupted by SIGTERM")[0].rsplit("[", 1)[1]  # 2026-01-02 03:04:05,678
    stopped = time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(stamp.split(",")[1]) / 1000
    assert stopped - sent < 5.0, "the run did not stop promptly"  # one image takes several seconds here
    finished = len(done())
    assert 1 <= finished < 4 and not list(cache.rglob("*.tmp*"))
    assert not (tmp_path / "run").exists()  # nothing of the interrupted run but its cached images
    proc = run_app(*slow, f"hydra.run.dir={tmp_path / 'resumed'}", f"eval.cache_dir={cache}")
    assert f"resuming: {finished} of 4" in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["num_images"] == 4
