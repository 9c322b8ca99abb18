"""Tests for ``ccdf.nets.fastmri_unet``: official key layout and numerics against fastMRI's code.

Fingerprints follow CHECKPOINTS.md: sha256 over the sorted ``"key d0,d1,..."`` rows, first 16 hex.

The numerical fixture ``tests/fixtures/fastmri_unet/unet_in2_out1_c8_p3_20x22.safetensors``
(tensors ``state_dict.<official key>``, ``input``, ``output``; the call is repeated in the file's
metadata) was produced once, on CPU in float32 with torch 2.14.1, by the official file alone:
facebookresearch/fastMRI@91f2df4711adbb6d643df1810f234e4abcf5881b ``fastmri/models/unet.py``,
``torch.manual_seed(4); net = Unet(2, 1, chans=8, num_pool_layers=3, drop_prob=0.0);
x = torch.randn(2, 2, 20, 22); net.eval(); y = net(x)`` (PyTorch default init). 20x22 pools to
10x11, 5x5, 2x2, so the reflect pad runs on both axes at different levels. The generating script
is not part of the repository.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from ccdf.nets.fastmri_unet import Unet

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fastmri_unet" / "unet_in2_out1_c8_p3_20x22.safetensors"
KEYS_DIR = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys"  # copies of CHECKPOINTS.md's TSVs


def fingerprint(sd: Mapping[str, Tensor]) -> str:
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in sd.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def meta_state_dict(*args: int, **kwargs: int) -> dict[str, Tensor]:
    # The leaderboard config has 496M parameters (~2 GB in float32): build it without storage.
    with torch.device("meta"):
        return Unet(*args, **kwargs).state_dict()


@pytest.mark.parametrize(
    ("chans", "n_params", "fp"),
    [(256, 496_372_225, "fbcb9c9e0a7dce8a"), (32, 7_756_097, "74f2b31f6bbf8acc")],
)
def test_official_config_fingerprint(chans: int, n_params: int, fp: str) -> None:
    sd = meta_state_dict(1, 1, chans=chans, num_pool_layers=4, drop_prob=0.0)
    assert len(sd) == 24
    assert sum(v.numel() for v in sd.values()) == n_params
    assert fingerprint(sd) == fp


def test_leaderboard_config_matches_reference_key_list() -> None:
    path = KEYS_DIR / "fastmri_unet_chans256.tsv"
    ref = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            ref.append((key, tuple(int(d) for d in shape.split(","))))
    sd = meta_state_dict(1, 1, chans=256, num_pool_layers=4)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == ref


@pytest.mark.parametrize("pools", [1, 2, 3, 4])
def test_key_layout(pools: int) -> None:
    sd = meta_state_dict(1, 3, chans=4, num_pool_layers=pools)
    p = pools
    expected = {f"down_sample_layers.{i}.layers.{j}.weight" for i in range(p) for j in (0, 4)}
    expected |= {"conv.layers.0.weight", "conv.layers.4.weight"}
    expected |= {f"up_transpose_conv.{i}.layers.0.weight" for i in range(p)}
    expected |= {f"up_conv.{i}.layers.{j}.weight" for i in range(p - 1) for j in (0, 4)}
    expected |= {f"up_conv.{p - 1}.0.layers.{j}.weight" for j in (0, 4)}
    expected |= {f"up_conv.{p - 1}.1.weight", f"up_conv.{p - 1}.1.bias"}
    assert set(sd) == expected
    assert [k for k in sd if k.endswith("bias")] == [f"up_conv.{p - 1}.1.bias"]
    assert sd[f"up_conv.{p - 1}.1.weight"].shape == (3, 4, 1, 1)
    # ConvTranspose2d stores [in, out, kH, kW].
    assert sd["up_transpose_conv.0.layers.0.weight"].shape == (4 * 2**p, 4 * 2 ** (p - 1), 2, 2)


@pytest.mark.parametrize(("pools", "h", "w"), [(2, 16, 16), (2, 9, 10), (3, 21, 17), (4, 33, 31)])
def test_output_shape_any_size(pools: int, h: int, w: int) -> None:
    net = Unet(2, 3, chans=4, num_pool_layers=pools).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 2, h, w)).shape == (1, 3, h, w)


def test_dropout_only_in_training() -> None:
    net = Unet(1, 1, chans=4, num_pool_layers=2, drop_prob=0.5)
    x = torch.randn(1, 1, 16, 16)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)
    net.train()
    torch.manual_seed(0)
    with torch.no_grad():
        a = net(x)
        b = net(x)
    assert not torch.equal(a, b)


def test_matches_official_output() -> None:
    data = load_file(FIXTURE)
    sd = {k.removeprefix("state_dict."): v for k, v in data.items() if k.startswith("state_dict.")}
    net = Unet(2, 1, chans=8, num_pool_layers=3, drop_prob=0.0)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x, ref = data["input"], data["output"]
    assert x.shape == (2, 2, 20, 22)
    with torch.no_grad():
        y = net(x)
    assert y.shape == ref.shape == (2, 1, 20, 22)
    assert ((y - ref).norm() / ref.norm()).item() <= 1e-5
