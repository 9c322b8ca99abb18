"""The app's checks, in process (``ccdf.app.main`` on a composed config, no subprocess): config precedence,
values refused before anything is built or sampled (each message names its key or file), non-finite values
anywhere, and what a failing run leaves in a folder that holds an earlier run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import ccdf.app as app
import ccdf.pipelines.reconstruct as reconstruct_pipeline
from tests.helpers import ROOT, SMOKE, app_cfg, compose_cfg


def sampler_of(cfg) -> tuple[str, float | None]:
    s = OmegaConf.to_container(cfg.sampler, resolve=True)
    return s["variance"], s["x0_clip"]


# ---------------------------------------------------------------------------------------------------------
# Item 5: sampler settings follow ordinary Hydra precedence
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["model=gaussian"], ("beta", None)),  # the sampler's own default
        (["model=iddpm_ffhq256"], ("learned", 1.0)),  # the model's preference
        (["experiment=sampler_precedence"], ("beta_tilde", 1.0)),  # an experiment beats the model
        (["model=iddpm_ffhq256", "debug=sampler_precedence"], ("learned", 2.0)),  # so does a debug config
        (["experiment=sampler_precedence", "sampler.variance=beta"], ("beta", 1.0)),  # the command line beats all
        (["model=iddpm_ffhq256", "debug=sampler_precedence", "sampler.x0_clip=0.5"], ("learned", 0.5)),
        (["model=iddpm_ffhq256", "sampler=ddim"], ("learned", 1.0)),  # sampler options inherit the fallback
    ],
)
def test_sampler_settings_precedence(tmp_path, overrides, expected):
    """command line > experiment/debug config > model preference (model.sampler_defaults) > sampler default.
    Before, the app copied the model's sampler_defaults over every value the command line had not set,
    so an experiment's or debug config's sampler.variance was silently replaced."""
    cfg = app_cfg(tmp_path, "task=sr4", *overrides, "++model.ckpt=ffhq_10m.pt")  # resolvable for eval_setting
    assert sampler_of(cfg) == expected
    app.validate(cfg)  # the app changes nothing: what composes is what runs
    assert sampler_of(cfg) == expected
    # the result cache's key and metrics.json (both written from the resolved config) see the values
    variance, clip = expected
    assert {k: app.eval_setting(cfg)["sampler"][k] for k in ("variance", "x0_clip")} == {"variance": variance,
                                                                                       "x0_clip": clip}  # fmt: skip


def _keys_named(node, names: tuple[str, ...], prefix: str = "") -> dict[str, object]:
    """Every value under ``node`` (a plain nested dict) whose key is in ``names``, by dotted path."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_keys_named(value, names, f"{prefix}{key}."))
        elif key in names:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("sampler", sorted(p.stem for p in (ROOT / "conf" / "sampler").glob("*.yaml")))
def test_model_preference_reaches_every_sampler_that_has_the_setting(tmp_path, sampler):
    """The model's sampler preferences (model.sampler_defaults) reach each sampler through its own
    interpolations, wherever that sampler keeps the setting (DPS: solver.variance), and never add a key a
    sampler does not take (DDNM, DiffPIR, DPM-Solver++ and PiGDM have no variance; the VE samplers pin
    variance=beta). This is why the preference is an interpolation and not a model config composed after
    the sampler's: that would write sampler.variance into every sampler."""
    task = "mri_multicoil" if sampler in ("ssos", "hybrid") else "sr4"
    names = ("variance", "x0_clip")
    prefer = app_cfg(tmp_path, f"task={task}", f"sampler={sampler}", "model=iddpm_ffhq256", "++model.ckpt=f.pt")
    plain = app_cfg(tmp_path, f"task={task}", f"sampler={sampler}", "model=gaussian")
    got = _keys_named(OmegaConf.to_container(prefer.sampler, resolve=True), names)
    default = _keys_named(OmegaConf.to_container(plain.sampler, resolve=True), names)
    assert set(got) == set(default) and "x0_clip" in got, (got, default)  # the same keys, with or without
    ve = sampler in ("ve_pc", "ssos", "hybrid")
    for key, value in got.items():
        if key.endswith("x0_clip"):
            assert (value, default[key]) == (1.0, None), key
        else:
            assert (value, default[key]) == (("beta", "beta") if ve else ("learned", "beta")), key


def test_smoke_run_records_resolved_sampler_and_unique_default_folder(tmp_path):
    cfg = app_cfg(tmp_path, *SMOKE)
    assert math.isfinite(app.main(cfg))
    sampler = json.loads((tmp_path / "run" / "metrics.json").read_text())["sampler"]
    assert sampler["variance"] == "beta" and sampler["x0_clip"] is None  # resolved, not "${oc.select:...}"
    # default run folders carry microseconds: two runs started in the same second get different folders
    dirs = [compose_cfg(["task=inpaint"]).hydra.run.dir for _ in range(2)]
    assert all(re.search(r"/runs/inpaint/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}$", d) for d in dirs), dirs


# ---------------------------------------------------------------------------------------------------------
# Items 10 and 12: values refused by validate (before anything is built), naming the key
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["seed=abc"], "seed must be an integer, got 'abc'"),
        (["seed=1.5"], "seed must be an integer, got 1.5"),
        (["batch_size=2.5"], "batch_size must be an integer, got 2.5"),
        (["batch_size=0"], "batch_size must be >= 1, got 0"),
        (["grid_images=-1"], "grid_images must be >= 0, got -1"),
        (["sampler.num_steps=10.5"], "sampler.num_steps must be an integer, got 10.5"),
        (["sigma_y=nan"], "non-finite config value(s): sigma_y=nan"),
        (["sigma_y=inf"], "non-finite config value(s): sigma_y=inf"),
        (["sigma_y='nan'"], "sigma_y must be a finite number, got 'nan'"),
        (["sampler.t0=nan"], "non-finite config value(s): sampler.t0=nan"),
        (["sampler.t0='nan'"], "sampler.t0 must be in (0, 1], got 'nan'"),
        (["eval.t0s=[0.1,nan]"], "non-finite config value(s): eval.t0s.1=nan"),
        (["operator.ratio=-inf"], "non-finite config value(s): operator.ratio=-inf"),
        (["sampler.t0=auto", "auto_t0.init_mse=nan"], "non-finite config value(s): auto_t0.init_mse=nan"),
        (["mode=train", "model=unet_small", "training.lr=nan"], "non-finite config value(s): training.lr=nan"),
        (["mode=train", "model=unet_small", "training.max_steps=2.5"], "training.max_steps must be an integer"),
        (["mode=train", "model=unet_small", "training.resume=/no/such.ckpt"],
         "training.resume: checkpoint file not found: /no/such.ckpt"),
        # item 5: sampler.t0=auto only with the steps its closed form covers
        (["sampler.t0=auto", "sampler.step=heun"], "sampler.t0=auto does not cover sampler.step='heun'"),
        (["sampler.t0=auto", "sampler.corrector=annealed"], "does not cover sampler.corrector='annealed'"),
        # issue 11: t0=auto with a solver or a conditioning the theory does not cover (issue 15: only DPS now)
        (["sampler=dps", "sampler.t0=auto"], "sampler.t0=auto does not cover sampler=dps"),
        (["sampler=dps", "sampler.t0=auto"], "DPS's guidance is the gradient of the norm ||y - A x0_hat(x_t)||"),
        # issue 12: nor score-MRI's coil-by-coil samplers (a sampler._target_ other than sample_ccdf)
        (["task=mri_multicoil", "sampler=ssos", "sampler.t0=auto"], "sampler.t0=auto does not cover sampler=ssos"),
        # ... nor an operator drawn per image (one operator is calibrated)
        (["sampler.t0=auto", "operator.per_image=true"], "operator.per_image=true draws a different operator"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(tmp_path, overrides, message):
    """Before: seed=abc failed in int() without naming the key, batch_size=2.5 ran as 2, NaN passed every
    check (sigma_y=nan ran to the end with NaN metrics), t0=auto treated any step as DDPM."""
    cfg = app_cfg(tmp_path, *SMOKE, *overrides)
    with pytest.raises(ValueError) as err:
        app.validate(cfg)
    assert message in str(err.value)


def test_auto_t0_refuses_a_step_function_it_does_not_cover():
    from ccdf.sampling.steps import ddim_step
    from ccdf.theory.auto import closed_form_sampler

    assert (closed_form_sampler("ddim", 0.0), closed_form_sampler("ddim", 0.5)) == ("ddim", "ddpm")
    assert closed_form_sampler("ancestral", corrector="langevin") == "ddpm"
    with pytest.raises(ValueError, match=r"sampler.step=<function ddim_step>.*ddpm, ancestral, ddim"):
        closed_form_sampler(ddim_step)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task=mri", "operator.center_fraction=-0.1"], "operator.center_fraction must be in [0, 1), got -0.1"),
        (["task=mri", "operator.center_fraction=1.0"], "operator.center_fraction must be in [0, 1), got 1.0"),
        (["task=mri", "operator.acceleration=0.5"], "operator.acceleration must be >= 1, got 0.5"),
        (["task=mri", "operator.pattern=radial"], "operator.pattern must be one of ('uniform', 'gaussian')"),
        (["operator.ratio=1.5"], "operator.ratio (of missing pixels) must be in [0, 1), got 1.5"),
        (["operator=inpaint_box", "operator.box_size=0"], "operator.box_size must be a positive integer"),
        (["operator=inpaint_box", "operator.box_size=100"], "operator.box_size: a box of 100x100 does not fit"),
        (["operator=inpaint_box", "operator.image_size=64.5"], "operator.image_size must be a positive integer"),
        (["task=sr4", "operator.factor=2.5"], "operator.factor must be a positive integer, got 2.5"),
    ],
)
def test_operator_values_out_of_range_name_the_key(tmp_path, overrides, message):
    """Before: center_fraction=-0.1 built a mask with no centre, factor=2.5 and image_size=64.5 were truncated."""
    cfg = app_cfg(tmp_path, *SMOKE, *overrides)
    with pytest.raises(ValueError) as err:
        app._instantiate(cfg.operator, "operator", "operator")
    assert message in str(err.value)


def test_operator_error_stops_the_run_before_sampling(tmp_path):
    cfg = app_cfg(tmp_path, *SMOKE, "task=mri", "operator.center_fraction=-0.1")
    with pytest.raises(ValueError, match=r"operator\.center_fraction must be in \[0, 1\)"):
        app.main(cfg)
    assert not (tmp_path / "run").exists() and not list((tmp_path / "cache").rglob("*.json"))


# ---------------------------------------------------------------------------------------------------------
# Item 11: folders needed after sampling are checked before it
# ---------------------------------------------------------------------------------------------------------


def test_missing_or_empty_fid_ref_and_unwritable_cache_are_found_before_sampling(tmp_path, monkeypatch):
    """Before: a missing eval.fid_ref folder failed in FID after all images were sampled, and an unwritable
    cache when the first result was stored. Now main stops before the sampler is called."""
    import ccdf.sampling

    def no_sampling(*args, **kwargs):
        raise AssertionError("the sampler ran")

    monkeypatch.setattr(ccdf.sampling, "sample_ccdf", no_sampling)  # sampler._target_
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cases = [
        (["eval.fid=true", f"eval.fid_ref={tmp_path / 'nothing'}"],
         f"eval.fid_ref: reference image folder not found: {tmp_path / 'nothing'}"),
        (["eval.fid=true", f"eval.fid_ref={empty}"], "eval.fid_ref: no images (bmp, jpeg, jpg, pgm, png"),
        ([f"eval.cache_dir={blocker / 'cache'}"], f"eval.cache_dir: cannot write to {blocker / 'cache'}"),
    ]  # fmt: skip
    for overrides, message in cases:
        cfg = app_cfg(tmp_path, *SMOKE, *overrides)
        with pytest.raises(ValueError) as err:
            app.main(cfg)
        assert message in str(err.value)
        assert not (tmp_path / "run").exists()
    # FID off: the reference folder is not needed, so not checked
    app.validate(app_cfg(tmp_path, *SMOKE, "eval.fid=false", f"eval.fid_ref={tmp_path / 'nothing'}"))


def test_inception_runs_where_eval_accelerator_says(tmp_path, monkeypatch):
    """Before: the Inception network went to CUDA whenever CUDA was available, even with eval.accelerator=cpu."""
    import ccdf.metrics

    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ccdf.metrics, "load_inception", lambda path, device: seen.append(torch.device(device)))
    for accelerator, device in (("cpu", "cpu"), ("auto", "cuda"), ("gpu", "cuda")):
        cfg = app_cfg(tmp_path, *SMOKE, "eval.fid=true", f"eval.accelerator={accelerator}")
        app._load_inception(cfg, is_mri=False)
        assert seen[-1] == torch.device(device), accelerator


# ---------------------------------------------------------------------------------------------------------
# Item 10: non-finite outputs never reach the cache or metrics.json
# ---------------------------------------------------------------------------------------------------------


def test_non_finite_reconstruction_stops_the_run_naming_the_image(tmp_path, monkeypatch):
    """Before: NaN reconstructions were scored and cached, and metrics.json held bare NaN (invalid JSON)."""
    from ccdf.denoisers import GaussianDenoiser

    forward = GaussianDenoiser.forward

    def nan_for_the_second_image(self, x, t):
        out = forward(self, x, t)
        out[1:] = float("nan")  # smoke data: 2 images, one batch
        return out

    monkeypatch.setattr(GaussianDenoiser, "forward", nan_for_the_second_image)
    cfg = app_cfg(tmp_path, *SMOKE, "eval.batch_invariant=false")  # one batched call, so image 1 is the NaN one
    with pytest.raises(FloatingPointError, match=r"reconstruction of image 1 \('[^']+'\) at t0=0.2 is not finite"):
        app.main(cfg)
    assert not list((tmp_path / "cache").rglob("t0_*/*.json"))  # no row of that batch was stored
    assert not (tmp_path / "run").exists()


def test_write_json_refuses_nan_and_names_the_key(tmp_path):
    from ccdf.utils.io import write_json

    path = tmp_path / "m.json"
    for bad, key in (({"a": {"b": [1.0, math.nan]}}, "a.b.1"), ({"fid": math.inf}, "fid"), ([-math.inf], "0")):
        with pytest.raises(ValueError, match=rf"refusing to write {re.escape(str(path))}: {re.escape(key)} is not"):
            write_json(path, bad)
        assert not path.exists() and not list(tmp_path.iterdir())
    write_json(path, {"a": [1.0, None, "nan"]})  # strings and null are fine
    assert json.loads(path.read_text()) == {"a": [1.0, None, "nan"]}


# ---------------------------------------------------------------------------------------------------------
# Item 7: a failing run never deletes what was in its folder before it started
# ---------------------------------------------------------------------------------------------------------


def test_failed_runs_keep_an_earlier_runs_files(tmp_path, monkeypatch):
    """An earlier run's recon/, grid.png, metrics.json, log and .hydra/ survive a run in the same folder that
    fails early (a bad value) or late (after writing its own outputs); the late one's new files are removed.
    Before: every failing run deleted .hydra/ and the log, and a late failure deleted recon/ wholesale."""
    run = tmp_path / "run"
    app.main(app_cfg(tmp_path, *SMOKE))
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("earlier\n")  # what Hydra writes (run.py, not in process)
    (run / f"{HydraConfig.get().job.name}.log").write_text("earlier run's log\n")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    log_name = f"{HydraConfig.get().job.name}.log"  # run.log under run.py
    assert {Path("metrics.json"), Path("grid.png"), Path(log_name)} <= set(before)
    assert len([p for p in before if p.parts[0] == "recon"]) == 2

    with pytest.raises(ValueError, match="sigma_y"):
        app.main(app_cfg(tmp_path, *SMOKE, "sigma_y=nan"))
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    def fail_after_writing(*args, **kwargs):
        raise RuntimeError("late failure")

    # log_results runs after every t0's recon/, grid.png, metrics.json
    monkeypatch.setattr(reconstruct_pipeline, "log_results", fail_after_writing)
    with pytest.raises(RuntimeError, match="late failure"):
        app.main(app_cfg(tmp_path, *SMOKE, "eval.t0s=[0.1,0.2]"))
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # its t0=0.1/ and t0=0.2/ folders are gone, the earlier files are untouched
    assert sorted(p.name for p in run.iterdir()) == sorted([".hydra", "grid.png", "metrics.json", "recon", log_name])


def test_failed_run_in_a_new_folder_leaves_nothing(tmp_path, monkeypatch):
    def fail_after_writing(*args, **kwargs):
        raise RuntimeError("late failure")

    monkeypatch.setattr(reconstruct_pipeline, "log_results", fail_after_writing)
    with pytest.raises(RuntimeError, match="late failure"):
        app.main(app_cfg(tmp_path, *SMOKE))
    assert not (tmp_path / "run").exists()
    assert list((tmp_path / "cache").rglob("t0_0.2/*.json"))  # finished images stay in the result cache


# ---------------------------------------------------------------------------------------------------------
# Issue 13: one pipeline per mode, each on typed settings; callbacks from the `callbacks` config group
# ---------------------------------------------------------------------------------------------------------


def test_validate_returns_the_modes_typed_settings(tmp_path):
    """validate() turns the composed config into the mode's frozen settings of plain typed values (before: it
    returned None and every pipeline read the DictConfig itself)."""
    import dataclasses

    from ccdf.pipelines.reconstruct import ReconstructSettings
    from ccdf.pipelines.theory import TheorySettings
    from ccdf.pipelines.train import TrainSettings

    rec = app.validate(app_cfg(tmp_path, *SMOKE, "batch_size=2.0", "eval.t0s=[0.1,0.2]"))
    assert isinstance(rec, ReconstructSettings) and rec.task == "inpaint" and rec.t0s == (0.1, 0.2)
    assert type(rec.batch_size) is int and rec.batch_size == 2 and rec.sections["sampler"]["t0"] == 0.2
    assert not OmegaConf.is_config(rec.sections["dataset"])  # resolved plain values, not config nodes
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.seed = 1  # type: ignore[misc]
    train = app.validate(app_cfg(tmp_path, "task=inpaint", "mode=train", "model=unet_small", "dataset.size=16"))
    assert isinstance(train, TrainSettings) and train.net_config["image_size"] == 16
    assert train.ckpt_dir == tmp_path / "run" / "checkpoints" and list(train.callbacks) == [
        "model_checkpoint", "export_weights", "sample_grid"]  # fmt: skip
    theory = app.validate(app_cfg(tmp_path, "task=theory", "theory.num_steps=100"))
    assert isinstance(theory, TheorySettings) and theory.num_steps == 100
    assert theory.contraction["denoisers"] == ["demo_prior", "gaussian"]  # measured by default (theory.json)
    assert app.validate(app_cfg(tmp_path, "task=theory", "theory.contraction=null")).contraction is None
    for bad, message in [("theory.contraction.iters=0", "theory.contraction.iters must be an integer >= 1"),
                         ("theory.contraction=3", "theory.contraction must be a mapping or null"),
                         ("+theory.contraction.steps=4", r"unknown key\(s\) \['steps'\]")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            app.validate(app_cfg(tmp_path, "task=theory", bad))


TRAIN_FAST = ["mode=train", "task=inpaint", "model=unet_small", "dataset=gaussian_field", "dataset.size=16",
              "trainer=cpu", "training.global_batch=2", "training.warmup_steps=1", "training.max_steps=2",
              "training.ckpt_every=2", "training.sample_every=2"]  # fmt: skip


def test_training_callbacks_come_from_the_callbacks_group(tmp_path):
    """In process: the callbacks that write files are the `callbacks` group's (dropping one drops its files;
    `~callbacks` keeps only the signal handler and Lightning's own default checkpoint), and train.json names the exported weights if any."""
    run = tmp_path / "run"
    assert math.isfinite(app.main(app_cfg(tmp_path, *TRAIN_FAST, "~callbacks.sample_grid")))
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert ckpts == {"step0000002.ckpt", "last.ckpt", "ema_step0000002.safetensors", "ema_last.safetensors"}
    assert not (run / "samples").exists()  # its callback was dropped
    assert json.loads((run / "train.json").read_text())["weights"] == str(run / "checkpoints" / "ema_last.safetensors")
    bare = tmp_path / "bare"
    assert math.isfinite(app.main(app_cfg(tmp_path, *TRAIN_FAST, "~callbacks", run="bare")))
    assert not list(bare.rglob("ema_*.safetensors")) and not (bare / "samples").exists()
    assert json.loads((bare / "train.json").read_text())["weights"] is None
