"""Tests for ``ccdf.nets.rrdbnet``: key layout, converters, and numerics against the official code.

Fingerprints follow CHECKPOINTS.md: sha256 over the sorted ``"key d0,d1,..."`` rows, first 16 hex.

Numerical fixtures (``tests/fixtures/rrdbnet/*.safetensors``; tensors ``state_dict.<official key>``,
``input``, ``output``; the constructor call is repeated in each file's metadata) were produced
once, on CPU in float32 with torch 2.14.1, by the official architecture files alone, loaded
outside this repository (BasicSR's ``basicsr.utils.registry`` stubbed and its ``arch_util``
reduced to the official ``default_init_weights``/``make_layer``/``pixel_unshuffle``); the
generating script is not part of the repository. Every net is in ``eval()`` and ``y = net(x)``:

- ``esrgan_x4_nf16_nb2_gc8``: xinntao/ESRGAN@73e9b634cf987f5996ac2dd33f4050922398a921
  ``RRDBNet_arch.py``: ``torch.manual_seed(0); net = RRDBNet(3, 3, 16, 2, gc=8);
  x = torch.rand(1, 3, 6, 7)`` (PyTorch default init).
- ``basicsr_x4_nf16_nb2_gc8``: XPixelGroup/BasicSR@8d56e3a045f9fb3e1d8872f92ee4a4f07f886b0a
  ``basicsr/archs/rrdbnet_arch.py``: ``torch.manual_seed(1); net = RRDBNet(3, 3, scale=4,
  num_feat=16, num_block=2, num_grow_ch=8)``, then ``reset_parameters()`` on every ``Conv2d`` (so
  the dense-block biases are non-zero), ``x = torch.rand(1, 3, 7, 5)``.
- ``basicsr_x2_nf16_nb1_gc8``: same file, ``torch.manual_seed(2); RRDBNet(3, 3, scale=2,
  num_feat=16, num_block=1, num_grow_ch=8)``, same re-init, ``x = torch.rand(1, 3, 8, 6)``
  (pixel-unshuffle path).
- ``oldarch_x8_nf8_nb1_gc32``: the pre-June-2019 ESRGAN arch,
  xinntao/ESRGAN@7f37803677e2b145621027c5258dc9076ab0befa ``architecture.py`` + ``block.py``:
  ``torch.manual_seed(3); net = RRDB_Net(3, 3, 8, 1, gc=32, upscale=8, norm_type=None,
  act_type='leakyrelu', mode='CNA', upsample_mode='upconv'); x = torch.rand(1, 3, 4, 5)``
  (PyTorch default init; ``RRDB_Net`` hard-codes gc=32 for its blocks).

The same scratch run also built the official old ``RRDB_Net`` at x8/x16 on the meta device; the
old-arch fingerprints below for x8/x16 come from those instantiations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from ccdf.nets.rrdbnet import (
    RRDBNet,
    esrgan_to_rrdbnet,
    oldarch_to_rrdbnet,
    rrdbnet_to_esrgan,
    rrdbnet_to_oldarch,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rrdbnet"
KEYS_DIR = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys"  # copies of CHECKPOINTS.md's TSVs


def fingerprint(sd: Mapping[str, Tensor]) -> str:
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in sd.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def numel(sd: Mapping[str, Tensor]) -> int:
    return sum(v.numel() for v in sd.values())


def meta_state_dict(**kwargs: int) -> dict[str, Tensor]:
    with torch.device("meta"):
        return RRDBNet(**kwargs).state_dict()


def read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    path = KEYS_DIR / name
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            rows.append((key, tuple(int(d) for d in shape.split(","))))
    return rows


def rows(sd: Mapping[str, Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in sd.items()]


def rel_err(ours: Tensor, ref: Tensor) -> float:
    return ((ours - ref).norm() / ref.norm()).item()


# ------------------------------------------------------------------------------------- layout


def test_x4_official_config_matches_basicsr_fingerprint() -> None:
    sd = meta_state_dict(num_in_ch=3, num_out_ch=3, scale=4)
    assert len(sd) == 702
    assert numel(sd) == 16_697_987
    assert fingerprint(sd) == "1c16f0b1f8e7d791"


def test_x4_converted_names_match_esrgan_and_oldarch_fingerprints() -> None:
    sd = meta_state_dict(scale=4)
    esrgan = rrdbnet_to_esrgan(sd)
    old = rrdbnet_to_oldarch(sd)
    assert fingerprint(esrgan) == "06591bb2ab27dcd3"
    assert fingerprint(old) == "9ed26022c1b10331"
    assert len(esrgan) == len(old) == 702
    assert numel(esrgan) == numel(old) == 16_697_987
    # Round trips return the same tensors under the same keys, in our order.
    for back in (esrgan_to_rrdbnet(esrgan), oldarch_to_rrdbnet(old)):
        assert list(back) == list(sd)
        assert all(back[k] is sd[k] for k in sd)


@pytest.mark.parametrize(
    ("tsv", "convert"),
    [
        ("basicsr_rrdbnet_x4.tsv", lambda sd: sd),
        ("esrgan_rrdbnet_x4.tsv", rrdbnet_to_esrgan),
        ("esrgan_oldarch_x4_derived.tsv", rrdbnet_to_oldarch),
    ],
)
def test_x4_matches_reference_key_lists(tsv: str, convert) -> None:  # noqa: ANN001
    assert rows(convert(meta_state_dict(scale=4))) == read_tsv(tsv)


@pytest.mark.parametrize(
    ("scale", "num_up", "n_tensors", "n_params", "oldarch_fp"),
    [
        (8, 3, 704, 16_734_915, "ef3b80adde072e15"),
        (16, 4, 706, 16_771_843, "2d746a588119bc19"),
    ],
)
def test_x8_x16_structure(scale: int, num_up: int, n_tensors: int, n_params: int, oldarch_fp: str) -> None:
    sd = meta_state_dict(scale=scale)
    up = sorted(k for k in sd if k.startswith("conv_up"))
    assert up == sorted(f"conv_up{k}.{p}" for k in range(1, num_up + 1) for p in ("weight", "bias"))
    assert (len(sd), numel(sd)) == (n_tensors, n_params)
    # Fingerprint of the official old-arch RRDB_Net(3, 3, 64, 23, upscale=scale) state dict.
    old = rrdbnet_to_oldarch(sd)
    assert fingerprint(old) == oldarch_fp
    assert old.keys() >= {f"model.{3 * k}.weight" for k in range(1, num_up + 1)}
    assert f"model.{2 + 3 * num_up}.weight" in old and f"model.{4 + 3 * num_up}.bias" in old
    assert list(oldarch_to_rrdbnet(old)) == list(sd)
    assert list(esrgan_to_rrdbnet(rrdbnet_to_esrgan(sd))) == list(sd)


@pytest.mark.parametrize("scale", [1, 2, 4, 8, 16])
def test_output_shape(scale: int) -> None:
    net = RRDBNet(3, 3, scale=scale, num_feat=8, num_block=1, num_grow_ch=4).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 4, 8))
    assert y.shape == (2, 3, 4 * scale, 8 * scale)
    assert net.num_up == max(2, scale.bit_length() - 1)


def test_invalid_scale() -> None:
    with pytest.raises(ValueError, match="scale"):
        RRDBNet(scale=3)


# ------------------------------------------------------------------------------ converters


def _tiny(scale: int = 4) -> dict[str, Tensor]:
    return RRDBNet(3, 3, scale=scale, num_feat=8, num_block=2, num_grow_ch=4).state_dict()


@pytest.mark.parametrize(
    ("to_theirs", "to_ours"),
    [(rrdbnet_to_esrgan, esrgan_to_rrdbnet), (rrdbnet_to_oldarch, oldarch_to_rrdbnet)],
)
def test_converters_are_strict(to_theirs, to_ours) -> None:  # noqa: ANN001
    theirs = to_theirs(_tiny())
    extra = {**theirs, "some.unexpected.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unknown keys \(1\): some\.unexpected\.weight"):
        to_ours(extra)
    dropped = dict(theirs)
    victim = next(k for k in dropped if ".1.RDB2.conv3." in k)
    del dropped[victim]
    with pytest.raises(ValueError, match=r"missing keys \(1\): " + re.escape(victim)):
        to_ours(dropped)
    # A BasicSR (ours) dict is not an ESRGAN / old-arch dict, and vice versa.
    with pytest.raises(ValueError):
        to_ours(_tiny())
    with pytest.raises(ValueError):
        to_theirs(theirs)


def test_oldarch_with_one_upsampling_stage_is_rejected() -> None:
    old = rrdbnet_to_oldarch(_tiny())
    # An old-arch x2 net: one [Upsample, Conv, LReLU] stage -> convs at model.3, model.5, model.7.
    x2 = {k: v for k, v in old.items() if not k.startswith(("model.6.", "model.8.", "model.10."))}
    x2 |= {"model.5.weight": old["model.8.weight"], "model.5.bias": old["model.8.bias"]}
    x2 |= {"model.7.weight": old["model.10.weight"], "model.7.bias": old["model.10.bias"]}
    with pytest.raises(ValueError, match="upsampling stage"):
        oldarch_to_rrdbnet(x2)


def test_converted_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    """Synthetic ESRGAN (plain) and BasicSR (``{'params': ...}``) files load strictly."""
    src = RRDBNet(3, 3, scale=8, num_feat=8, num_block=2, num_grow_ch=4)
    torch.save(rrdbnet_to_esrgan(src.state_dict()), tmp_path / "esrgan.pth")
    torch.save({"params": src.state_dict()}, tmp_path / "basicsr.pth")
    for sd in (
        esrgan_to_rrdbnet(torch.load(tmp_path / "esrgan.pth", weights_only=True)),
        torch.load(tmp_path / "basicsr.pth", weights_only=True)["params"],
    ):
        net = RRDBNet(3, 3, scale=8, num_feat=8, num_block=2, num_grow_ch=4)
        net.load_state_dict(sd, strict=True)
        for k, v in net.state_dict().items():
            torch.testing.assert_close(v, src.state_dict()[k], rtol=0, atol=0)


# ------------------------------------------------------------------ numerics vs official code

NUMERIC_CASES = {
    # fixture stem: (converter into our names, RRDBNet kwargs)
    "esrgan_x4_nf16_nb2_gc8": (
        esrgan_to_rrdbnet,
        dict(scale=4, num_feat=16, num_block=2, num_grow_ch=8),
    ),
    "basicsr_x4_nf16_nb2_gc8": (None, dict(scale=4, num_feat=16, num_block=2, num_grow_ch=8)),
    "basicsr_x2_nf16_nb1_gc8": (None, dict(scale=2, num_feat=16, num_block=1, num_grow_ch=8)),
    "oldarch_x8_nf8_nb1_gc32": (
        oldarch_to_rrdbnet,
        dict(scale=8, num_feat=8, num_block=1, num_grow_ch=32),
    ),
}


@pytest.mark.parametrize("stem", sorted(NUMERIC_CASES))
def test_matches_official_output(stem: str) -> None:
    convert, kwargs = NUMERIC_CASES[stem]
    data = load_file(FIXTURES / f"{stem}.safetensors")
    official = {k.removeprefix("state_dict."): v for k, v in data.items() if k.startswith("state_dict.")}
    sd = convert(official) if convert is not None else official
    net = RRDBNet(3, 3, **kwargs)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x, ref = data["input"], data["output"]
    with torch.no_grad():
        y = net(x)
    assert y.shape == ref.shape == (x.shape[0], 3, kwargs["scale"] * x.shape[2], kwargs["scale"] * x.shape[3])
    assert rel_err(y, ref) <= 1e-5
