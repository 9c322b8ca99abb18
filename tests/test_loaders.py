"""Checkpoint loaders: every official layout round-trips exactly; bad files give clear errors.

Synthetic checkpoints are saved from our own small-config nets (every parameter randomised, so
zero-initialised layers are not vacuous) in each layout of docs/reference/CHECKPOINTS.md, then loaded
back with :func:`ccdf.checkpoints.load_net` and compared tensor by tensor.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import ccdf.checkpoints as L
from ccdf.checkpoints import cli as inspect_checkpoint
from ccdf.nets.rrdbnet import rrdbnet_to_esrgan
from tests.helpers import ROOT, SMALL, app_cfg, randomize, small_net


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b) or set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def official_score_sde(net: nn.Module, ema: nn.Module, step: int = 7, numpy_step: bool = False) -> dict:
    """What score_sde's ``save_checkpoint`` writes: DataParallel keys, EMA list, a real Adam state."""
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4)
    loss = sum((p**2).sum() for p in net.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return {
        "optimizer": opt.state_dict(),
        "model": {f"module.{k}": v.detach().clone() for k, v in net.state_dict().items()},
        "ema": {
            "decay": 0.999,
            "num_updates": step,
            "shadow_params": [p.detach().clone() for p in ema.parameters() if p.requires_grad],
        },
        "step": np.int64(step) if numpy_step else step,
    }


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

CASES = [
    ("guided_unet", "plain", ["plain"]),
    ("guided_unet", "module", ["plain", "module"]),
    ("guided_unet", "safetensors", ["safetensors"]),
    ("guided_unet", "ccdf", ["ccdf"]),
    ("ncsnpp", "plain", ["plain"]),
    ("ncsnpp", "module", ["plain", "module"]),
    ("ncsnpp", "ccdf", ["ccdf"]),
    ("rrdbnet", "plain", ["plain"]),
    ("rrdbnet", "module", ["plain", "module"]),
    ("rrdbnet", "basicsr", ["basicsr_params"]),
    ("rrdbnet", "esrgan", ["plain", "esrgan"]),
    ("rrdbnet", "oldarch", ["plain", "oldarch"]),
    ("rrdbnet", "ccdf", ["ccdf"]),
    ("fastmri_unet", "plain", ["plain"]),
    ("fastmri_unet", "module", ["plain", "module"]),
    ("fastmri_unet", "ccdf", ["ccdf"]),
]


@pytest.mark.parametrize("family,layout,tags", CASES, ids=[f"{f}-{lay}" for f, lay, _ in CASES])
def test_layout_round_trip_is_exact(tmp_path, family, layout, tags):
    net = small_net(family)
    path = L.save_checkpoint(
        tmp_path / ("w.safetensors" if layout in ("ccdf", "safetensors") else "w.pt"),
        net,
        layout=layout,
        family=family,
        config=SMALL[family],
    )
    loaded, ext = L.load_net(path, family=family, config=SMALL[family])
    assert ext.layout == tags and ext.family == family
    assert_same(loaded.state_dict(), net.state_dict())
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    # the same file into an existing net
    fresh = L.build_net(family, SMALL[family])
    L.load_checkpoint_into(fresh, path, family=family)
    assert_same(fresh.state_dict(), net.state_dict())


def test_ccdf_file_carries_its_config(tmp_path):
    net = small_net("guided_unet")
    path = L.save_checkpoint(tmp_path / "w.safetensors", net, family="guided_unet", config=SMALL["guided_unet"])
    loaded, ext = L.load_net(path)  # no family, no config: all from the metadata
    assert ext.layout == ["ccdf"] and isinstance(loaded, type(net))
    assert_same(loaded.state_dict(), net.state_dict())
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x, torch.tensor([3])), net.eval()(x, torch.tensor([3])))


def test_ccdf_file_refuses_another_config(tmp_path):
    path = L.save_checkpoint(
        tmp_path / "w.safetensors", small_net("rrdbnet"), family="rrdbnet", config=SMALL["rrdbnet"]
    )
    other = dict(SMALL["rrdbnet"], num_grow_ch=8)
    with pytest.raises(L.CheckpointMismatchError, match="was saved for config"):
        L.load_net(path, family="rrdbnet", config=other)


def test_basicsr_prefers_params_ema(tmp_path):
    net, ema = small_net("rrdbnet", 0), small_net("rrdbnet", 1)
    path = L.save_checkpoint(tmp_path / "w.pth", net, layout="basicsr_ema", ema=ema.state_dict())
    loaded, ext = L.load_net(path, family="rrdbnet", config=SMALL["rrdbnet"])
    assert ext.layout == ["basicsr_params_ema"]
    assert_same(loaded.state_dict(), ema.state_dict())
    raw, ext = L.load_net(path, family="rrdbnet", config=SMALL["rrdbnet"], use_ema=False)
    assert ext.layout == ["basicsr_params"]
    assert_same(raw.state_dict(), net.state_dict())


def test_basicsr_params_ema_with_module_prefix_and_xinntao_names(tmp_path):
    """BasicSR strips ``module.`` too; a converted file may hold ESRGAN names inside ``params``."""
    net = small_net("rrdbnet")
    sd = {f"module.{k}": v for k, v in rrdbnet_to_esrgan(net.state_dict()).items()}
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    loaded, ext = L.load_net(tmp_path / "w.pth", family="rrdbnet", config=SMALL["rrdbnet"])
    assert ext.layout == ["basicsr_params_ema", "module", "esrgan"]
    assert_same(loaded.state_dict(), net.state_dict())


@pytest.mark.parametrize("numpy_step", [False, True])
def test_score_sde_restores_ema_by_trainable_order_and_w_from_model(tmp_path, numpy_step):
    net, ema = small_net("ncsnpp", 0), small_net("ncsnpp", 1)
    torch.save(official_score_sde(net, ema, numpy_step=numpy_step), tmp_path / "checkpoint_95.pth")
    loaded, ext = L.load_net(tmp_path / "checkpoint_95.pth", family="ncsnpp", config=SMALL["ncsnpp"])
    assert ext.layout == ["score_sde", "module"]
    expected = ema.state_dict()
    # non-trainable tensors come from 'model': the frozen Fourier W (not in the EMA) and sigmas
    expected["all_modules.0.W"] = net.state_dict()["all_modules.0.W"]
    expected["sigmas"] = net.state_dict()["sigmas"]
    assert not torch.equal(expected["all_modules.0.W"], ema.state_dict()["all_modules.0.W"])
    assert_same(loaded.state_dict(), expected)
    assert loaded.sigmas.dtype == torch.float64
    # raw weights on request
    raw, ext = L.load_net(tmp_path / "checkpoint_95.pth", family="ncsnpp", config=SMALL["ncsnpp"], use_ema=False)
    assert ext.layout == ["score_sde_model", "module"]
    assert_same(raw.state_dict(), net.state_dict())
    # the key-order rule (used when no net is at hand) equals the net's trainable order
    rule = L.extract_state_dict(L.read_checkpoint(tmp_path / "checkpoint_95.pth"))
    assert_same(rule.state_dict, expected)


def test_score_sde_writer_matches_official_structure(tmp_path):
    net, ema = small_net("ncsnpp", 0), small_net("ncsnpp", 1)
    path = L.save_checkpoint(tmp_path / "c.pth", net, layout="score_sde", ema=ema.state_dict(), step=5)
    obj = torch.load(path, weights_only=True)
    assert set(obj) == {"model", "ema", "step"} and all(k.startswith("module.") for k in obj["model"])
    assert len(obj["ema"]["shadow_params"]) == sum(p.requires_grad for p in net.parameters())
    loaded, _ = L.load_net(path, family="ncsnpp", config=SMALL["ncsnpp"])
    assert torch.equal(loaded.all_modules[1].weight, ema.all_modules[1].weight)


def test_score_sde_without_sigmas_recomputes_them(tmp_path):
    """score-MRI pops ``module.sigmas``; it is derived from the config, so it may be absent."""
    net = small_net("ncsnpp")
    obj = official_score_sde(net, net)
    del obj["model"]["module.sigmas"]
    torch.save(obj, tmp_path / "c.pth")
    loaded, _ = L.load_net(tmp_path / "c.pth", family="ncsnpp", config=SMALL["ncsnpp"])
    assert torch.equal(loaded.sigmas, net.sigmas) and not loaded.sigmas.is_meta


def test_score_sde_ema_of_another_config(tmp_path):
    net = small_net("ncsnpp")
    obj = official_score_sde(net, net)
    obj["ema"]["shadow_params"] = obj["ema"]["shadow_params"][:-1]
    torch.save(obj, tmp_path / "c.pth")
    with pytest.raises(L.CheckpointMismatchError, match="EMA has .* shadow parameters"):
        L.load_net(tmp_path / "c.pth", family="ncsnpp", config=SMALL["ncsnpp"])


# --------------------------------------------------------------------------------------------
# Presets and fingerprints
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(L.PRESETS))
def test_preset_fingerprints(name):
    assert L.preset_fingerprint(name) == L.PRESETS[name].fingerprint


def test_fingerprints_of_official_layouts_agree_with_checkpoints_md():
    """The BasicSR-named presets equal the table; the file-key fingerprints of the other namings too."""
    table = {fp: what for fp, what in L.OFFICIAL_FINGERPRINTS.items()}
    for name in ("ffhq256", "adm256_uncond", "fastmri_knee_320", "esrgan_x4", "fastmri_unet_knee_sc"):
        assert L.PRESETS[name].fingerprint in table
    shapes = L.preset_shapes("esrgan_x4")
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert L.fingerprint(rrdbnet_to_esrgan(sd)) == "06591bb2ab27dcd3"


def zeros_like_preset(name: str) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in L.preset_shapes(name).items()}


def test_wrong_config_names_the_preset_that_fits(tmp_path):
    """An official-size ESRGAN x4 file (xinntao names) given where x8 is expected."""
    torch.save(rrdbnet_to_esrgan(zeros_like_preset("esrgan_x4")), tmp_path / "RRDB_ESRGAN_x4.pth")
    with pytest.raises(L.CheckpointMismatchError) as info:
        L.load_net(tmp_path / "RRDB_ESRGAN_x4.pth", preset="esrgan_x8")
    msg = str(info.value)
    assert "missing keys (2): conv_up3.bias, conv_up3.weight" in msg  # the x8 net's third stage
    assert "'esrgan_x4'" in msg and "RRDB_ESRGAN_x4.pth" in msg and info.value.matches == ["esrgan_x4"]
    # and with the right preset it loads; without any it is recognised by its fingerprint
    net, ext = L.load_net(tmp_path / "RRDB_ESRGAN_x4.pth")
    assert ext.layout == ["plain", "esrgan"] and net.scale == 4


def test_file_of_another_family_is_named(tmp_path):
    sd = zeros_like_preset("fastmri_unet_chans32")
    torch.save(sd, tmp_path / "unet.pt")
    with pytest.raises(L.CheckpointMismatchError) as info:
        L.load_net(tmp_path / "unet.pt", preset="ffhq256")
    msg = str(info.value)
    assert "holds a fastmri_unet network, not a guided_unet" in msg
    assert "fastmri_unet_chans32" in msg and "initializer=unet" in msg
    with pytest.raises(L.CheckpointMismatchError, match="fastmri_unet_chans32"):
        L.load_net(tmp_path / "unet.pt", preset="fastmri_unet_knee_sc")


def test_score_sde_file_given_to_the_unet_loader(tmp_path):
    net = small_net("ncsnpp")
    torch.save(official_score_sde(net, net), tmp_path / "checkpoint_95.pth")
    with pytest.raises(L.CheckpointMismatchError, match="holds a ncsnpp network, not a guided_unet"):
        L.load_net(tmp_path / "checkpoint_95.pth", preset="ffhq256")


def test_wrong_small_config_lists_shape_mismatches(tmp_path):
    net = small_net("guided_unet")
    L.save_checkpoint(tmp_path / "w.pt", net, layout="plain")
    other = dict(SMALL["guided_unet"], out_channels=3)
    with pytest.raises(L.CheckpointMismatchError) as info:
        L.load_net(tmp_path / "w.pt", family="guided_unet", config=other)
    msg = str(info.value)
    assert "shape mismatches (2)" in msg and "out.2.weight file [6, 32, 3, 3] vs net [3, 32, 3, 3]" in msg
    assert "guided_unet" in msg and info.value.mismatched[0][0] == "out.2.bias"


def test_long_key_lists_are_truncated(tmp_path):
    L.save_checkpoint(tmp_path / "w.pt", small_net("guided_unet"), layout="plain")
    deeper = dict(SMALL["guided_unet"], num_res_blocks=2)
    with pytest.raises(L.CheckpointMismatchError) as info:
        L.load_net(tmp_path / "w.pt", family="guided_unet", config=deeper)
    missing = info.value.missing
    assert len(missing) > 12
    assert f"missing keys ({len(missing)}): " in str(info.value) and f"... ({len(missing) - 12} more)" in str(
        info.value
    )


def test_rrdbnet_structure_is_inferred_in_the_message(tmp_path):
    L.save_checkpoint(tmp_path / "w.pt", small_net("rrdbnet"), layout="oldarch")
    with pytest.raises(L.CheckpointMismatchError) as info:
        L.load_net(tmp_path / "w.pt", preset="esrgan_x4")
    assert "'num_feat': 8" in str(info.value) and "'num_block': 2" in str(info.value)


def test_unknown_configuration_without_preset(tmp_path):
    L.save_checkpoint(tmp_path / "w.pt", small_net("guided_unet"), layout="plain")
    with pytest.raises(L.CheckpointMismatchError, match="cannot tell which configuration.*guided_unet"):
        L.load_net(tmp_path / "w.pt")


# --------------------------------------------------------------------------------------------
# Unreadable files
# --------------------------------------------------------------------------------------------


class NotATensor:
    pass


def test_missing_file_says_where_the_official_one_is(tmp_path):
    path = tmp_path / "nope" / "ffhq_10m.pt"
    with pytest.raises(L.CheckpointNotFoundError) as info:
        L.load_net(path, preset="ffhq256")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in msg and "ffhq_10m.pt" in msg and "117Y6Z6-Hg6TMZVIXMmgYbpZy7QvTXign" in msg
    assert "model=iddpm_ffhq256" in msg
    with pytest.raises(FileNotFoundError, match="No official esrgan_x8 weights are published"):
        L.load_net(path, preset="esrgan_x8")
    with pytest.raises(FileNotFoundError, match="docs/checkpoints.md"):
        L.read_checkpoint(path)


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_truncated_file(tmp_path, kind):
    net = small_net("fastmri_unet")
    if kind == "safetensors":
        path = L.save_checkpoint(tmp_path / "w.safetensors", net, layout="safetensors")
    else:
        path = tmp_path / "w.pt"
        torch.save(net.state_dict(), path, _use_new_zipfile_serialization=kind == "zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(L.CheckpointReadError, match="truncated"):
        L.load_net(path, family="fastmri_unet", config=SMALL["fastmri_unet"])


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", bytes(range(256)) * 8])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(L.CheckpointReadError, match="cannot read checkpoint"):
        L.read_checkpoint(path)


@pytest.mark.parametrize(
    "payload,name",
    [(NotATensor(), "NotATensor"), (os.system, "system"), (print, "print")],
    ids=["object", "os", "builtin"],
)
def test_pickle_with_non_tensor_objects_is_refused(tmp_path, payload, name):
    torch.save({"conv.weight": torch.zeros(2), "extra": payload}, tmp_path / "w.pt")
    with pytest.raises(L.UnsafeCheckpointError, match=f"non-tensor object .*{name}"):
        L.read_checkpoint(tmp_path / "w.pt")


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "note": "hello", "weights": [torch.zeros(2)]}, tmp_path / "w.pt")
    with pytest.raises(L.CheckpointReadError, match="not a state dict.*epoch"):
        L.load_net(tmp_path / "w.pt", preset="ffhq256")


# --------------------------------------------------------------------------------------------
# Inspection command
# --------------------------------------------------------------------------------------------

INSPECT = [
    ("guided_unet", "plain", "plain"),
    ("guided_unet", "module", "plain, module"),
    ("ncsnpp", "score_sde", "score_sde, module"),
    ("rrdbnet", "basicsr", "basicsr_params"),
    ("rrdbnet", "basicsr_ema", "basicsr_params_ema"),
    ("rrdbnet", "esrgan", "plain, esrgan"),
    ("rrdbnet", "oldarch", "plain, oldarch"),
    ("fastmri_unet", "plain", "plain"),
    ("fastmri_unet", "safetensors", "safetensors"),
    ("guided_unet", "ccdf", "ccdf"),
]


@pytest.mark.parametrize("family,layout,shown", INSPECT, ids=[f"{f}-{lay}" for f, lay, _ in INSPECT])
def test_inspect_each_layout(tmp_path, capsys, family, layout, shown):
    net = small_net(family)
    path = L.save_checkpoint(
        tmp_path / ("w.safetensors" if layout in ("ccdf", "safetensors") else "w.pt"),
        net,
        layout=layout,
        family=family,
        config=SMALL[family],
    )
    assert inspect_checkpoint.main([str(path)]) == 0
    out = capsys.readouterr().out
    sd = net.state_dict()
    assert f"layout:      {shown} -- " in out
    assert f"family:      {family}" in out
    assert f"tensors:     {len(sd)}\n" in out
    assert f"parameters:  {sum(v.numel() for v in sd.values()):,} " in out
    assert f"fingerprint: {L.fingerprint(sd)} " in out
    if layout == "ccdf":
        assert "(from the file's metadata)" in out and "model.preset=null" in out
    if family == "rrdbnet":
        assert "(inferred)" in out and '"num_feat": 8' in out
    if family == "fastmri_unet":
        assert "(inferred)" in out and '"chans": 4' in out


def test_inspect_official_size_file_names_preset_and_command(tmp_path, capsys):
    path = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(rrdbnet_to_esrgan(zeros_like_preset("esrgan_x4")), path)
    assert inspect_checkpoint.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "tensors:     702" in out and "parameters:  16,697,987" in out
    assert "fingerprint: 1c16f0b1f8e7d791" in out
    assert "06591bb2ab27dcd3 = official ESRGAN RRDBNet x4 (xinntao/ESRGAN names)" in out
    assert "preset:      esrgan_x4" in out
    assert f"load with:   python run.py task=sr4 initializer=esrgan initializer.ckpt={path}" in out


def test_inspect_unreadable_files_exit_nonzero(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert inspect_checkpoint.main([str(tmp_path / "bad.pt")]) == 1
    assert "error: cannot read checkpoint" in capsys.readouterr().err
    assert inspect_checkpoint.main([str(tmp_path / "missing.pt")]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err


@pytest.mark.e2e  # two `python -m ccdf.inspect_checkpoint` subprocesses (make test-e2e)
def test_inspect_as_a_module(tmp_path):
    L.save_checkpoint(tmp_path / "w.pt", small_net("fastmri_unet"), layout="module")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "ccdf.checkpoints"]
    ok = subprocess.run([*cmd, str(tmp_path / "w.pt")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0 and "fastmri_unet" in ok.stdout, ok.stderr
    bad = subprocess.run([*cmd, str(tmp_path / "x.pt")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 1 and "not found" in bad.stderr


# --------------------------------------------------------------------------------------------
# Non-finite weights; the printed command runs as printed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["plain", "ccdf"])
@pytest.mark.parametrize("bad", [float("nan"), float("-inf")])
def test_non_finite_weights_are_refused_naming_the_file_and_tensor(tmp_path, layout, bad):
    """Before: a checkpoint with NaN/inf weights loaded, and every reconstruction came out NaN."""
    net = small_net("guided_unet")
    key = "input_blocks.0.0.weight"  # the first tensor of the state dict
    with torch.no_grad():
        net.state_dict()[key].view(-1)[3] = bad
    path = L.save_checkpoint(tmp_path / ("w.safetensors" if layout == "ccdf" else "w.pt"), net, layout=layout,
                             family="guided_unet", config=SMALL["guided_unet"])  # fmt: skip
    counts = "1 NaN and 0 infinite" if bad != bad else "0 NaN and 1 infinite"
    with pytest.raises(L.NonFiniteCheckpointError) as err:
        L.load_net(path, family="guided_unet", config=SMALL["guided_unet"])
    assert f"checkpoint {str(path)!r} holds non-finite weights: tensor {key!r} [32, 3, 3, 3] has {counts}" in str(
        err.value
    )


CUSTOM = [  # ccdf files of non-preset configs, as ccdf's training (or a user) writes them
    ("guided_unet", {}),  # learned variance (6 output channels)
    ("guided_unet", {"out_channels": 3}),  # eps only: what `mode=train model=unet_small` exports
    ("ncsnpp", {}),
    ("rrdbnet", {}),
    ("rrdbnet", {"scale": 8}),
    ("fastmri_unet", {}),
]


@pytest.mark.parametrize("family,change", CUSTOM, ids=[f"{f}-{'-'.join(map(str, c.values())) or 'small'}"
                                                      for f, c in CUSTOM])  # fmt: skip
def test_inspect_prints_a_command_that_runs_as_printed(tmp_path, capsys, family, change):
    """The `load with:` line, split as a shell splits it, composes, validates, builds and reconstructs (at the
    smoke size). The folder name has a space and a comma: quoted for the shell and for Hydra's grammar.
    Before: the path went in unquoted, an eps-only UNet got model=iddpm_ffhq256 (learned variance: the first
    step failed) and an x8 RRDBNet got task=sr4."""
    import shlex

    import ccdf.app as app

    config = {**SMALL[family], **change}
    path = L.save_checkpoint(tmp_path / "my ckpts, v1" / "w.safetensors", randomize(L.build_net(family, config), 0),
                             layout="ccdf", family=family, config=config)  # fmt: skip
    assert inspect_checkpoint.main([str(path)]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("load with:")]
    argv = shlex.split(line.removeprefix("load with:"))
    assert argv[:2] == ["python", "run.py"] and any(str(path) in a for a in argv), argv
    cfg = app_cfg(tmp_path, *argv[2:], "debug=smoke", "dataset.size=32")
    app.validate(cfg)
    comps = app.build(cfg)
    x0 = comps.dataset[0]["x0"][None]
    y = comps.operator(x0)
    x_init = comps.initializer(y, comps.operator)
    x = comps.sampler(comps.denoiser, comps.schedule, comps.operator, y, x_init, generator=torch.Generator())
    assert x.shape == x0.shape and bool(torch.isfinite(torch.view_as_real(x) if x.is_complex() else x).all())


def test_inspect_names_no_command_when_no_task_fits(tmp_path, capsys):
    config = {**SMALL["rrdbnet"], "scale": 2}  # ESRGANInitializer takes x4, x8 and x16 only
    path = L.save_checkpoint(tmp_path / "w.safetensors", L.build_net("rrdbnet", config), layout="ccdf",
                             family="rrdbnet", config=config)  # fmt: skip
    assert inspect_checkpoint.main([str(path)]) == 0
    assert "load with:   no run.py task fits this configuration; in Python: " in capsys.readouterr().out


@pytest.mark.parametrize("value", ["/a/b-c_d.e+f@g%h.pt", "/my ckpts, v1/w.pt", "/x/it's [1]=(2)${y}.pt", "1.5"])
def test_command_value_reaches_hydra_unchanged(value):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    (arg,) = shlex.split(f"model.ckpt={inspect_checkpoint.command_value(value)}")
    parsed = OverridesParser.create().parse_override(arg).value()
    assert OmegaConf.create({"ckpt": parsed}).ckpt == value  # `${` escaped: no interpolation
