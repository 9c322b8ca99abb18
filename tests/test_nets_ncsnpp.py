"""Tests for ``ccdf.nets.ncsnpp`` (NCSN++ of score_sde / score-MRI).

Key layout: the official fastMRI-320 architecture is built on the ``meta`` device and compared with the
fingerprint of ``docs/reference/CHECKPOINTS.md`` and with its key/shape TSV (``docs/checkpoint-keys/``, copied
into ``tests/fixtures/checkpoint-keys/``).

Numerics: ``tests/fixtures/ncsnpp/<case>.safetensors`` hold, for three small configurations, a full
state dict in the official key layout (``state_dict.<key>``; float32 parameters stored as float16
because they were rounded to float16 values *before* the reference forward, so the upcast is exact;
``sigmas`` in float64), a noisy batch ``x`` (``x0 + sigma * z``), per-sample ``sigma``, and ``out``:
the output of the OFFICIAL code for these inputs. The safetensors metadata repeats the provenance,
the config overrides, the official ``state_dict`` key order and the trainable-parameter order.

How the fixtures were produced (one-off script outside this repository, not committed):
HJ-harry/score-MRI at commit 8359aae5a4eca1e6d9447d35820e07f5188f9b00, ``models/ncsnpp.py`` with its
``models/layerspp.py``, ``models/layers.py``, ``models/up_or_down_sampling.py`` and ``op/upfirdn2d.py``
(whose CPU path is the pure-PyTorch ``upfirdn2d_native``; no CUDA extension was built), torch 2.14.1,
CPU, float32, ``model.eval()``. Config: score-MRI's ``configs/ve/fastmri_knee_320_ncsnpp_continuous.py``
over ``configs/default_lsun_configs.py`` (built as a plain namespace) with these overrides:

- ``reduced``: image_size 32, nf 16, ch_mult (1, 2, 2), num_res_blocks 1, attn_resolutions (8,)
  (attention at the 8x8 level and in the middle), num_channels 1; every other flag as score-MRI
  (fir [1,3,3,1], biggan, progressive_input residual, skip_rescale, fourier 16, conditional,
  scale_by_sigma, centered False). Seed 0; sigma = [0.01, 0.37, 5, 378].
- ``nofir_plain``: image_size 16, nf 8, ch_mult (1, 2), num_res_blocks 1, attn_resolutions (16,),
  num_channels 2, fir False, skip_rescale False, centered True, conditional False,
  scale_by_sigma False. Seed 1; sigma = [0.05, 2, 100].
- ``no_input_pyramid``: image_size 16, nf 8, ch_mult (1, 2, 2), num_res_blocks 2,
  attn_resolutions (4,), progressive_input 'none'. Seed 2; sigma = [0.1, 30].

For each case: ``torch.manual_seed(seed)`` before building the official net, then EVERY parameter was
re-drawn from a ``torch.Generator`` seeded ``1000 + seed`` (so the zero-initialised ``init_scale=0``
convs are not vacuous): matrices/kernels ``N(0, 1/fan_in)``, 1-D weights ``1 + 0.3 N(0, 1)``, biases
``0.3 N(0, 1)``, Fourier ``W`` ``16 N(0, 1)``; all rounded to float16 values. Then
``x0 ~ U[0, 1]`` (mapped to [-1, 1] when centered), ``x = x0 + sigma * N(0, 1)``, same generator.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from ccdf.checkpoints import ncsnpp_config
from ccdf.nets.ncsnpp import (
    AttnBlockpp,
    NCSNpp,
    conv_downsample_2d,
    downsample_2d,
    upfirdn2d,
    upsample_2d,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ncsnpp"
TSV = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys" / "ncsnpp_fastmri_knee_320.tsv"
CASES = ["reduced", "nofir_plain", "no_input_pyramid"]
OFFICIAL_COMMIT = "8359aae5a4eca1e6d9447d35820e07f5188f9b00"


def fingerprint(sd: dict[str, torch.Tensor]) -> str:
    """CHECKPOINTS.md convention: sha256 of the sorted ``"key d0,d1,..."`` rows, first 16 hex digits."""
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in sd.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def meta_net() -> NCSNpp:
    with torch.device("meta"):
        return NCSNpp(**ncsnpp_config("fastmri_knee_320"))


def load_case(case: str) -> tuple[NCSNpp, dict[str, torch.Tensor], dict[str, Any]]:
    """Build our net with the case's config and load the fixture's official-layout state dict."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = FIXTURES / f"{case}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    kwargs = ncsnpp_config("fastmri_knee_320")
    overrides = json.loads(meta["config"])
    kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    net = NCSNpp(**kwargs).eval()
    sd = {k.removeprefix("state_dict."): v for k, v in tensors.items() if k.startswith("state_dict.")}
    ours = net.state_dict()
    net.load_state_dict({k: v.to(ours[k].dtype) for k, v in sd.items()}, strict=True)
    return net, tensors, meta


# ---------------------------------------------------------------- official fastMRI-320 layout


def test_fastmri320_fingerprint(meta_net: NCSNpp) -> None:
    sd = meta_net.state_dict()
    assert len(sd) == 522
    assert sum(v.numel() for v in sd.values()) == 61_435_601
    assert sum(p.numel() for p in meta_net.parameters() if p.requires_grad) == 61_433_473
    assert fingerprint(sd) == "302628efd6bcfcb2"
    assert len(meta_net.all_modules) == 54
    assert sd["sigmas"].dtype == torch.float64
    w = meta_net.all_modules[0].W
    assert isinstance(w, torch.nn.Parameter) and not w.requires_grad
    spot = {
        "all_modules.1.weight": (512, 256),
        "all_modules.27.NIN_0.W": (256, 256),
        "all_modules.45.Conv_2.weight": (256, 384, 1, 1),
        "all_modules.53.weight": (1, 128, 3, 3),
        "all_modules.9.Conv2d_0.weight": (128, 1, 3, 3),
    }
    for key, shape in spot.items():
        assert tuple(sd[key].shape) == shape, key


def _read_tsv() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        rows.append((key, tuple(int(d) for d in shape.split(","))))
    return rows


def test_fastmri320_matches_reference_tsv(meta_net: NCSNpp) -> None:
    rows = _read_tsv()
    assert [(k, tuple(v.shape)) for k, v in meta_net.state_dict().items()] == rows


def test_fastmri320_trainable_order_is_ema_order(meta_net: NCSNpp) -> None:
    """score_sde's EMA ``shadow_params`` follow ``parameters()`` with frozen ones dropped."""
    names = [n for n, p in meta_net.named_parameters() if p.requires_grad]
    assert len(names) == 520
    assert names[:5] == [
        "all_modules.1.weight",
        "all_modules.1.bias",
        "all_modules.2.weight",
        "all_modules.2.bias",
        "all_modules.3.weight",
    ]
    assert names[-2:] == ["all_modules.53.weight", "all_modules.53.bias"]
    rows = _read_tsv()
    expected = [k for k, _ in rows if k not in ("sigmas", "all_modules.0.W")]
    assert names == expected
    assert [n for n, _ in meta_net.named_parameters()] == ["all_modules.0.W", *expected]


def test_sigmas_buffer() -> None:
    net = NCSNpp(image_size=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=())
    s = net.sigmas
    assert s.dtype == torch.float64 and s.shape == (2000,)
    assert math.isclose(s[0].item(), 378.0, rel_tol=1e-12)
    assert math.isclose(s[-1].item(), 0.01, rel_tol=1e-12)
    assert bool((s[1:] < s[:-1]).all())


def test_unsupported_options_are_rejected() -> None:
    for kw in (
        {"resblock_type": "ddpm"},
        {"progressive": "output_skip"},
        {"progressive_input": "input_skip"},
        {"embedding_type": "positional"},
    ):
        with pytest.raises(NotImplementedError):
            NCSNpp(image_size=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, **kw)
    with pytest.raises(KeyError):
        ncsnpp_config("nope")


# ---------------------------------------------------------------- numerics against the official code


@pytest.mark.parametrize("case", CASES)
def test_matches_official_output(case: str) -> None:
    net, t, meta = load_case(case)
    assert meta["repo"] == "HJ-harry/score-MRI" and meta["commit"] == OFFICIAL_COMMIT
    with torch.no_grad():
        out = net(t["x"], t["sigma"])
    ref = t["out"]
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5
    for i in range(ref.shape[0]):  # per sample too: the sigma=0.01 sample dominates the total norm
        assert ((out[i] - ref[i]).norm() / ref[i].norm()).item() <= 1e-5, i


@pytest.mark.parametrize("case", CASES)
def test_key_order_matches_official(case: str) -> None:
    net, t, meta = load_case(case)
    assert list(net.state_dict()) == json.loads(meta["state_dict_keys"])
    assert [n for n, p in net.named_parameters() if p.requires_grad] == json.loads(meta["trainable_keys"])
    # the official sigmas buffer (float64, exp of a linspace): equal to float64 rounding. Not bit for bit: the
    # fixture was computed by numpy's exp on one CPU, and exp's last bit differs across CPUs and libm builds.
    fresh = NCSNpp(image_size=8, nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=())
    assert fresh.sigmas.dtype == torch.float64
    torch.testing.assert_close(fresh.sigmas, t["state_dict.sigmas"], rtol=1e-12, atol=0)


def test_fixture_is_not_vacuous() -> None:
    """Every tensor in the fixture is random (no zero-initialised layer), and the output depends on it."""
    net, t, _ = load_case("reduced")
    for key, value in t.items():
        if key.startswith("state_dict.") and value.numel() > 1:
            assert value.float().std() > 0, key
    last = net.all_modules[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.weight.abs().min() > 0
    attn = [m for m in net.all_modules if isinstance(m, AttnBlockpp)]
    assert len(attn) == 3  # encoder 8x8, middle, decoder 8x8
    with torch.no_grad():
        attn[0].NIN_3.W.mul_(1.01)
        out = net(t["x"], t["sigma"])
    assert ((out - t["out"]).norm() / t["out"].norm()).item() > 1e-5


def test_scalar_sigma_and_backward() -> None:
    net, t, _ = load_case("reduced")
    x = t["x"][:1].clone().requires_grad_(True)
    out = net(x, t["sigma"][1])  # 0-dim sigma is broadcast over the batch
    with torch.no_grad():
        ref = net(x, t["sigma"][1:2])
    torch.testing.assert_close(out, ref)
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ---------------------------------------------------------------- upfirdn2d


def _upfirdn2d_loop(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """Direct definition: y[n] = sum_j k[j] * u[n*down - j] over the padded, zero-stuffed signal u."""
    b, c, h, w = x.shape
    u = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    u[:, :, ::up, ::up] = x
    u = torch.nn.functional.pad(u, (pad[0], pad[1], pad[0], pad[1]))
    kh, kw = k.shape
    oh = (u.shape[-2] - kh) // down + 1
    ow = (u.shape[-1] - kw) // down + 1
    y = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            patch = u[:, :, i * down : i * down + kh, j * down : j * down + kw]
            y[:, :, i, j] = (patch * torch.flip(k, [0, 1])).sum((-2, -1))
    return y


@pytest.mark.parametrize(("up", "down", "pad"), [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (1, 1)), (3, 2, (0, -1))])
def test_upfirdn2d_matches_direct_definition(up: int, down: int, pad: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=g)
    k = torch.randn(4, 3, dtype=torch.float64, generator=g)  # asymmetric, non-separable: flip matters
    torch.testing.assert_close(upfirdn2d(x, k, up=up, down=down, pad=pad), _upfirdn2d_loop(x, k, up, down, pad))


def test_fir_resampling_shapes_and_constants() -> None:
    ones = torch.ones(1, 2, 8, 8, dtype=torch.float64)
    up = upsample_2d(ones)
    down = downsample_2d(ones)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    # constant images are preserved away from the zero-padded border
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.zeros(3, 2, 3, 3, dtype=torch.float64)
    w[:, :, 1, 1] = 1.0  # centre-tap conv summing the input channels: fused op == FIR downsample
    expected = downsample_2d(x).sum(1, keepdim=True).expand(1, 3, 4, 4)
    torch.testing.assert_close(conv_downsample_2d(x, w), expected)
