"""ccdf.checkpoints: a family is one registered object; presets are defined once; modules stay small.

The toy family below is registered the way a module in ccdf/checkpoints/families/ does it, and then goes
through every generic path (save in ours and in its official naming, detect, match the preset by
fingerprint, load strictly, inspect, print the command) without any other file knowing about it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from torch import Tensor, nn

import ccdf.checkpoints as C
from ccdf.checkpoints import cli
from ccdf.checkpoints.family import CKPT, FAMILIES, OFFICIAL_FINGERPRINTS, CheckpointFamily
from ccdf.checkpoints.presets import PRESETS, Preset
from ccdf.denoisers.adapters import demo_prior_path
from tests.helpers import ROOT


class Toy(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.toy_in = nn.Linear(2, width)
        self.toy_out = nn.Linear(width, 2)


class ToyFamily(CheckpointFamily):
    name = "toy"
    net = Toy
    marker = "toy_in.weight"
    official = {"0000000000000000": "placeholder"}  # replaced below by the real fingerprint
    namings = {"upper": "upper-case names renamed"}

    def recognises(self, keys: set[str]) -> bool:
        return "TOY_IN.WEIGHT" in keys

    def to_ours(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], str | None]:
        if "TOY_IN.WEIGHT" in state_dict:
            return {k.lower(): v for k, v in state_dict.items()}, "upper"
        return state_dict, None

    def from_ours(self, state_dict: Mapping[str, Tensor], naming: str) -> dict[str, Tensor]:
        return {k.upper(): v for k, v in state_dict.items()}

    def infer_config(self, state_dict: Mapping[str, Tensor]) -> dict[str, Any] | None:
        return {"width": int(state_dict["toy_in.weight"].shape[0])}

    def run_overrides(self, config: Mapping[str, Any]) -> dict[str, str] | None:
        return {"task": "sr4", "initializer": "toy", "initializer.ckpt": CKPT}


@pytest.fixture
def toy(monkeypatch):
    """Register the toy family and a preset as a families/ module would (undone after the test)."""
    family = ToyFamily()
    shapes = family.expected_keys({"width": 5})
    fp = C.fingerprint({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    upper_fp = C.fingerprint({k.upper(): torch.empty(s, device="meta") for k, s in shapes.items()})
    monkeypatch.setattr(ToyFamily, "official", {upper_fp: "toy (upper-case names)"})
    monkeypatch.setitem(FAMILIES, "toy", family)
    monkeypatch.setitem(OFFICIAL_FINGERPRINTS, upper_fp, "toy (upper-case names)")
    run = {"task": "sr4", "initializer": "toy", "initializer.ckpt": CKPT}
    monkeypatch.setitem(PRESETS, "toy_w5", Preset("toy_w5", "toy", {"width": 5}, fp, ("toy.pt",), "nowhere", run))
    return family


def test_a_registered_family_goes_through_every_generic_path(toy, tmp_path, capsys):
    torch.manual_seed(0)
    net = Toy(5)
    # ours, then the family's official naming (the save layout comes from the family's namings)
    assert "upper" in C.save_layouts()
    plain = C.save_checkpoint(tmp_path / "plain.pt", net, layout="plain")
    upper = C.save_checkpoint(tmp_path / "upper.pt", net, layout="upper")
    assert set(torch.load(upper, weights_only=True)) == {
        "TOY_IN.WEIGHT",
        "TOY_IN.BIAS",
        "TOY_OUT.WEIGHT",
        "TOY_OUT.BIAS",
    }
    for path, layout in ((plain, ["plain"]), (upper, ["plain", "upper"])):
        loaded, ext = C.load_net(path)  # no family, no preset: marker / naming, then the preset's fingerprint
        assert isinstance(loaded, Toy) and ext.family == "toy" and ext.layout == layout
        for k, v in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
    # a wrong width names the preset that fits and the inferred config
    with pytest.raises(C.CheckpointMismatchError, match=r"toy_w5.*initializer=toy") as err:
        C.load_net(plain, family="toy", config={"width": 6})
    assert err.value.matches == ["toy_w5"]
    # inspection: the official naming's fingerprint, the preset, the run overrides as data, the printed command
    info = C.describe_checkpoint(upper)
    assert info.official == "toy (upper-case names)" and info.presets == ["toy_w5"] and info.config == {"width": 5}
    assert info.run == [{"task": "sr4", "initializer": "toy", "initializer.ckpt": CKPT}]
    assert cli.main([str(upper)]) == 0
    out = capsys.readouterr().out
    assert f"load with:   python run.py task=sr4 initializer=toy initializer.ckpt={upper}" in out
    assert "layout:      plain, upper -- plain state dict; upper-case names renamed" in out
    # a ccdf file of another width: the family's own overrides
    other = C.save_checkpoint(tmp_path / "w7.safetensors", Toy(7), family="toy", config={"width": 7})
    assert C.describe_checkpoint(other).run == [{"task": "sr4", "initializer": "toy", "initializer.ckpt": CKPT}]


def test_families_are_registered_once_with_their_presets():
    assert set(FAMILIES) == {"guided_unet", "ncsnpp", "rrdbnet", "fastmri_unet"}
    assert {p.family for p in PRESETS.values()} == set(FAMILIES)
    for p in PRESETS.values():  # every published preset says, as data, which run.py key takes the file
        assert list(p.run.values()).count(CKPT) == 1, p.name
    with pytest.raises(ValueError, match="registered twice"):
        C.register_family(FAMILIES["rrdbnet"])
    with pytest.raises(ValueError, match="registered twice"):
        C.register_presets(PRESETS["ffhq256"])


def test_demo_prior_config_lives_in_its_preset_only():
    """Before: the demo prior's GuidedUNet arguments were written in conf/model/demo_prior.yaml and, separately,
    in the shipped file's metadata; now the YAML names the preset and the file's stored config equals it."""
    with safe_open(str(demo_prior_path()), "pt") as f:
        stored = json.loads(f.metadata()["ccdf.config"])
    assert json.loads(json.dumps(dict(PRESETS["demo_prior"].config))) == stored
    yaml = (ROOT / "conf" / "model" / "demo_prior.yaml").read_text()
    assert "\npreset: demo_prior" in yaml and "\nnet:" not in yaml and "model_channels" not in yaml
    net, ext = C.load_net(demo_prior_path(), preset="demo_prior")
    assert ext.layout == ["ccdf"] and net.model_channels == 32
    assert C.match_presets(net.state_dict()) == ["demo_prior"]
    assert C.describe_checkpoint(demo_prior_path()).run == [
        {"task": "inpaint", "model": "demo_prior", "model.ckpt": CKPT}
    ]


def test_a_ccdf_file_of_the_demo_prior_shape_but_another_config_is_not_called_the_demo_prior(tmp_path):
    """`mode=train model=unet_small` at 16 px writes the demo prior's keys and shapes (image_size is not a weight):
    its own stored config wins, so inspection prints unet_small's command, not the demo prior's."""
    config = {**PRESETS["demo_prior"].config, "image_size": 16}
    path = C.save_checkpoint(tmp_path / "ema_last.safetensors", C.build_net("guided_unet", config), family="guided_unet",
                             config=config)  # fmt: skip
    info = C.describe_checkpoint(path)
    assert info.presets == [] and info.config == json.loads(json.dumps(config))
    assert info.run == [{"task": "sr4", "model": "unet_small", "model.ckpt": CKPT}]


def test_checkpoint_and_net_modules_stay_below_500_lines():
    modules = [*(ROOT / "ccdf" / "checkpoints").rglob("*.py"), *(ROOT / "ccdf" / "nets").rglob("*.py")]
    assert len(modules) >= 15
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(Path(p).read_text().splitlines())) >= 500}
    assert not long, long


@pytest.mark.e2e  # python run.py mode=train (make test-e2e)
def test_demo_prior_trains_from_its_preset_and_its_export_loads_with_it(tmp_path):
    """`mode=train model=demo_prior` builds the preset's net (the YAML has no `net:` block); the exported
    weights load back through the preset (their stored config equals it)."""
    from ccdf.denoisers.adapters import load_demo_prior
    from ccdf.schedules import DiscreteVP
    from tests.helpers import run_app

    run_dir = tmp_path / "train"
    run_app("mode=train", "task=inpaint", "model=demo_prior", "dataset=samples_crops", "trainer=cpu",
            "training.global_batch=2", "training.max_steps=1", "training.ckpt_every=1", "training.sample_every=1000",
            f"hydra.run.dir={run_dir}")  # fmt: skip
    export = run_dir / "checkpoints" / "ema_last.safetensors"
    with safe_open(str(export), "pt") as f:
        assert json.loads(f.metadata()["ccdf.config"]) == json.loads(json.dumps(dict(PRESETS["demo_prior"].config)))
    denoiser = load_demo_prior(DiscreteVP.linear(), ckpt=export)
    assert denoiser.net.model_channels == 32
