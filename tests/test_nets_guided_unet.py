"""Tests for ``ccdf.nets.guided_unet``: checkpoint key layout and numerical equivalence.

Key layout: the published architectures are built on the ``meta`` device (no memory) and their
``state_dict`` is compared with docs/reference/CHECKPOINTS.md (tensor count, numel, fingerprint) and with the
reference key/shape lists of docs/checkpoint-keys/, copied into tests/fixtures/checkpoint-keys/.

Numerics: ``tests/fixtures/guided_unet/*.safetensors`` hold random weights in the official layout
(``weights.<key>``), an input ``x``, ``timesteps`` (and ``y``), and the output ``out`` of the
OFFICIAL code on them. How they were produced (the generating script is deliberately not part of
the repository):

* Official code: openai/guided-diffusion at commit 22e0df8183507e13a7813f8d38d51b072ca1e67c
  (``guided_diffusion.unet.UNetModel``) and openai/improved-diffusion at commit
  1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5 (``improved_diffusion.unet.UNetModel``), imported
  unmodified; torch 2.14.1, CPU, float32, ``model.eval()``, ``torch.no_grad()``.
* ``torch.manual_seed(seed)``, then ``UNetModel(**kwargs)`` with the kwargs in ``CASES`` below
  (also stored verbatim in each file's metadata under ``constructor``).
* Every parameter was then overwritten, in ``state_dict`` order, from
  ``g = torch.Generator().manual_seed(seed)``: biases ``0.1 * randn``, GroupNorm weights
  ``1 + 0.1 * randn``, ``label_emb.weight`` ``randn``, all other weights ``randn / sqrt(fan_in)``
  (``fan_in = w[0].numel()``), each rounded to float16 and back. So the zero-initialised layers
  (``zero_module``: ResBlock ``out_layers.3``, attention ``proj_out``, ``out.2``) are NOT zero and
  the test is not vacuous. Weights are stored as float16 to keep the files small; the reference
  was computed in float32 from exactly those float16-rounded values.
* ``x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))`` and
  ``out = model(x, timesteps[, y])``.

Seeds: ``adm_updown_scaleshift`` 0, ``adm_newattn_classcond`` 1, ``iddpm_legacy`` 2. The same
weights run through the official code in float64 differ from its float32 output by about 1e-6
(relative), so the 1e-5 bound below leaves room only for float32 rounding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from ccdf.checkpoints import GUIDED_FLAGS, guided_unet_config
from ccdf.nets.guided_unet import (
    GuidedUNet,
    guided_flags_to_kwargs,
    iddpm_flags_to_kwargs,
    qkv_attention,
    timestep_embedding,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "guided_unet"
KEYS_DIR = Path(__file__).resolve().parent / "fixtures" / "checkpoint-keys"  # copies of CHECKPOINTS.md's TSVs

GUIDED_COMMIT = "22e0df8183507e13a7813f8d38d51b072ca1e67c"
IDDPM_COMMIT = "1bc7bbbdc414d83d4abf2ad8cc1446dc36c4e4d5"


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Any:
    """These nets are tiny: one thread is fastest, and avoids OpenMP stalls on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------
# Key layout of the published checkpoints
# ------------------------------------------------------------------------------------------

# (preset, tensors, numel, fingerprint, TSV) from docs/reference/CHECKPOINTS.md, table at the top.
PUBLISHED = [
    ("ffhq256", 362, 93_563_910, "1ffa5b3b9b24aa3e", "guided_unet_ffhq256_ilvr_dps.tsv"),
    ("afhq_dog256", 362, 93_563_910, "1ffa5b3b9b24aa3e", "guided_unet_ffhq256_ilvr_dps.tsv"),
    ("adm256_uncond", 566, 552_814_086, "86f5708ebb91ab69", "guided_unet_adm256_uncond.tsv"),
    ("imagenet256_uncond", 566, 552_814_086, "86f5708ebb91ab69", "guided_unet_adm256_uncond.tsv"),
]


def fingerprint(sd: dict[str, torch.Tensor]) -> str:
    """The convention of docs/reference/CHECKPOINTS.md: sha256 of the sorted ``"key d0,d1,..."`` rows."""
    rows = sorted(f"{k} {','.join(str(d) for d in v.shape)}" for k, v in sd.items())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def meta_net(**kwargs: Any) -> GuidedUNet:
    with torch.device("meta"):
        return GuidedUNet(**kwargs)


@pytest.mark.parametrize(("preset", "count", "numel", "fp", "tsv"), PUBLISHED)
def test_published_fingerprint(preset: str, count: int, numel: int, fp: str, tsv: str) -> None:
    sd = meta_net(**guided_unet_config(preset)).state_dict()
    assert len(sd) == count
    assert sum(v.numel() for v in sd.values()) == numel
    assert fingerprint(sd) == fp


@pytest.mark.parametrize(("preset", "count", "numel", "fp", "tsv"), PUBLISHED[::2])
def test_published_keys_match_reference_tsv(preset: str, count: int, numel: int, fp: str, tsv: str) -> None:
    path = KEYS_DIR / tsv
    ref = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        ref.append((key, tuple(int(d) for d in shape.split(","))))
    ours = [(k, tuple(v.shape)) for k, v in meta_net(**guided_unet_config(preset)).state_dict().items()]
    assert ours == ref  # same keys, same shapes, same (reference state_dict) order


def test_ffhq_spot_checks_and_no_buffers() -> None:
    net = meta_net(**guided_unet_config("ffhq256"))
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["out.2.weight"] == (6, 128, 3, 3)
    assert shapes["input_blocks.9.1.qkv.weight"] == (1536, 512, 1)
    assert shapes["output_blocks.3.0.skip_connection.weight"] == (512, 768, 1, 1)
    assert shapes["input_blocks.1.0.emb_layers.1.weight"] == (256, 512)
    assert "label_emb.weight" not in shapes
    assert list(shapes) == [n for n, _ in net.named_parameters()]  # no buffers anywhere
    heads = {m.num_heads for m in net.modules() if type(m).__name__ == "AttentionBlock"}
    assert heads == {8}


def test_flags_of_the_published_commands() -> None:
    # ILVR README command line (strings, as argparse delivers them).
    ilvr = dict(
        attention_resolutions="16",
        class_cond=False,
        dropout=0.0,
        image_size=256,
        learn_sigma=True,
        num_channels=128,
        num_head_channels=64,
        num_res_blocks=1,
        resblock_updown=True,
        use_fp16=False,
        use_scale_shift_norm=True,
    )
    kw = guided_flags_to_kwargs(**ilvr)
    assert kw["attention_resolutions"] == (16,)
    assert kw["channel_mult"] == (1, 1, 2, 2, 4, 4)
    assert kw["out_channels"] == 6 and kw["num_classes"] is None
    assert fingerprint(meta_net(**kw).state_dict()) == "1ffa5b3b9b24aa3e"
    # DPS configs/model_config.yaml writes attention_resolutions as a YAML int.
    dps = {**ilvr, "attention_resolutions": 16, "num_heads": 4, "channel_mult": ""}
    assert guided_flags_to_kwargs(**dps) == guided_unet_config("ffhq256")
    # guided-diffusion's 256x256 uncond command.
    assert guided_unet_config("adm256_uncond")["attention_resolutions"] == (8, 16, 32)
    assert guided_flags_to_kwargs(image_size=64, num_channels=32, num_res_blocks=1, channel_mult="1,2,3")[
        "channel_mult"
    ] == (1, 2, 3)
    assert guided_flags_to_kwargs(image_size=512, num_channels=256, num_res_blocks=2)["channel_mult"][0] == 0.5
    with pytest.raises(KeyError):
        guided_unet_config("nope")
    assert set(GUIDED_FLAGS) >= {"ffhq256", "adm256_uncond"}


def test_iddpm_flags() -> None:
    # IDDPM README, CIFAR-10 model flags (other flags at IDDPM defaults).
    kw = iddpm_flags_to_kwargs(image_size=32, num_channels=128, num_res_blocks=3, learn_sigma=True, dropout=0.3)
    assert kw["channel_mult"] == (1, 2, 2, 2)
    assert kw["attention_resolutions"] == (2, 4)
    assert not kw["resblock_updown"] and kw["num_head_channels"] == -1 and not kw["use_new_attention_order"]
    assert kw["num_heads"] == 4 and kw["use_scale_shift_norm"]
    sd = meta_net(**kw).state_dict()
    assert sd["input_blocks.4.0.op.weight"].shape == (128, 128, 3, 3)  # conv Downsample after 3 ResBlocks
    with pytest.raises(ValueError):
        iddpm_flags_to_kwargs(image_size=128, num_channels=64, num_res_blocks=2)


# ------------------------------------------------------------------------------------------
# Numerical equivalence with the official forward pass
# ------------------------------------------------------------------------------------------

CASES: dict[str, dict[str, Any]] = {
    # guided UNetModel(image_size=32, in_channels=3, model_channels=32, out_channels=6,
    #   num_res_blocks=1, attention_resolutions=[2], dropout=0.0, channel_mult=[1, 1],
    #   conv_resample=True, num_classes=None, num_heads=4, num_head_channels=16,
    #   num_heads_upsample=-1, use_scale_shift_norm=True, resblock_updown=True,
    #   use_new_attention_order=False); x [2, 3, 32, 32], timesteps tensor([7, 503]).
    "adm_updown_scaleshift": dict(
        image_size=32,
        in_channels=3,
        model_channels=32,
        out_channels=6,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 1),
        num_heads=4,
        num_head_channels=16,
        use_scale_shift_norm=True,
        resblock_updown=True,
        use_new_attention_order=False,
    ),
    # guided UNetModel(image_size=16, in_channels=3, model_channels=32, out_channels=3,
    #   num_res_blocks=1, attention_resolutions=[1, 2], dropout=0.0, channel_mult=[1, 1],
    #   conv_resample=True, num_classes=10, num_heads=2, num_head_channels=-1,
    #   num_heads_upsample=4, use_scale_shift_norm=False, resblock_updown=False,
    #   use_new_attention_order=True); x [2, 3, 16, 16], timesteps tensor([12.5, 730.25]),
    #   y tensor([3, 9]).
    "adm_newattn_classcond": dict(
        image_size=16,
        in_channels=3,
        model_channels=32,
        out_channels=3,
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        channel_mult=(1, 1),
        num_classes=10,
        num_heads=2,
        num_heads_upsample=4,
        use_scale_shift_norm=False,
        resblock_updown=False,
        use_new_attention_order=True,
    ),
    # improved-diffusion UNetModel(in_channels=3, model_channels=32, out_channels=6,
    #   num_res_blocks=1, attention_resolutions=[2], dropout=0.0, channel_mult=[1, 1],
    #   conv_resample=True, num_classes=None, num_heads=2, num_heads_upsample=-1,
    #   use_scale_shift_norm=True); x [2, 3, 32, 32], timesteps tensor([1.25, 999.75])
    #   (IDDPM's rescaled float time, t * 1000 / 4000). Loaded as a guided net with
    #   resblock_updown=False, num_head_channels=-1, legacy attention.
    "iddpm_legacy": dict(
        image_size=32,
        in_channels=3,
        model_channels=32,
        out_channels=6,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 1),
        num_heads=2,
        use_scale_shift_norm=True,
        resblock_updown=False,
        num_head_channels=-1,
        use_new_attention_order=False,
    ),
}
SOURCES = {
    "adm_updown_scaleshift": ("openai/guided-diffusion", GUIDED_COMMIT, "0"),
    "adm_newattn_classcond": ("openai/guided-diffusion", GUIDED_COMMIT, "1"),
    "iddpm_legacy": ("openai/improved-diffusion", IDDPM_COMMIT, "2"),
}


def load_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        meta = f.metadata()
    weights = {k.removeprefix("weights."): v.float() for k, v in tensors.items() if k.startswith("weights.")}
    data = {k: v for k, v in tensors.items() if not k.startswith("weights.")}
    return weights, data, meta


def build_from_fixture(name: str) -> tuple[GuidedUNet, dict[str, torch.Tensor]]:
    weights, data, _ = load_fixture(name)
    net = GuidedUNet(**CASES[name]).eval()
    net.load_state_dict(weights, strict=True)
    return net, data


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_provenance_and_not_vacuous(name: str) -> None:
    weights, data, meta = load_fixture(name)
    repo, commit, seed = SOURCES[name]
    assert (meta["repo"], meta["commit"], meta["seed"]) == (repo, commit, seed)
    official = json.loads(meta["constructor"].split("(**", 1)[1][:-1])
    ours = CASES[name]
    for key in (
        "in_channels",
        "model_channels",
        "out_channels",
        "num_res_blocks",
        "num_heads",
        "num_classes",
        "use_scale_shift_norm",
    ):
        assert official[key] == ours.get(key, None if key == "num_classes" else official[key])
    assert tuple(official["attention_resolutions"]) == ours["attention_resolutions"]
    assert tuple(official["channel_mult"]) == ours["channel_mult"]
    for key in ("resblock_updown", "num_head_channels", "use_new_attention_order", "num_heads_upsample"):
        if key in official:
            assert official[key] == ours.get(key, -1 if "num_head" in key else False)
    # zero_module layers were randomised, so they are exercised
    assert all(v.abs().sum() > 0 for v in weights.values())
    assert data["out"].std() > 0.1


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_official_forward_float32(name: str) -> None:
    net, data = build_from_fixture(name)
    with torch.no_grad():
        out = net(data["x"], data["timesteps"], data.get("y"))
    ref = data["out"]
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_official_forward_in_float64(name: str) -> None:
    # Same function, not merely the same rounding: float64 evaluation is within float32 noise.
    net, data = build_from_fixture(name)
    net = net.double()
    with torch.no_grad():
        out = net(data["x"].double(), data["timesteps"], data.get("y"))
    ref = data["out"].double()
    assert out.dtype == torch.float64
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5


# ------------------------------------------------------------------------------------------
# Smaller contracts
# ------------------------------------------------------------------------------------------


def test_fresh_net_is_zero_initialised_like_the_official_one() -> None:
    net = GuidedUNet(**CASES["adm_updown_scaleshift"])
    norm_biases = {f"{n}.bias" for n, m in net.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    zeroed = {k for k, v in net.state_dict().items() if not v.any()} - norm_biases
    expected = {k for k in net.state_dict() if k.startswith("out.2.") or ".out_layers.3." in k or ".proj_out." in k}
    assert zeroed == expected
    x = torch.randn(1, 3, 32, 32)
    assert not net(x, torch.tensor([10])).any()


def test_timesteps_forms_and_class_label_contract() -> None:
    net, data = build_from_fixture("adm_newattn_classcond")
    x, y = data["x"][:1], data["y"][:1]
    with torch.no_grad():
        a = net(x, torch.tensor([12]), y)
        b = net(x, torch.tensor([12.0]), y)
        c = net(x, 12, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    with pytest.raises(ValueError):
        net(x, torch.tensor([12]))
    plain = GuidedUNet(**CASES["iddpm_legacy"])
    with pytest.raises(ValueError):
        plain(torch.zeros(1, 3, 32, 32), torch.tensor([0]), torch.tensor([1]))


def test_timestep_embedding_cos_first() -> None:
    t = torch.tensor([0.0, 3.0])
    emb = timestep_embedding(t, 8)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert timestep_embedding(t, 7).shape == (2, 7) and (timestep_embedding(t, 7)[:, -1] == 0).all()


def test_attention_orders_are_permutations_of_each_other() -> None:
    # Legacy packs [head: q k v], new packs [q: heads, k: heads, v: heads]; permuting the channels
    # maps one onto the other, and with one head they coincide.
    b, heads, c, t = 2, 3, 4, 5
    qkv_new = torch.randn(b, 3 * heads * c, t, dtype=torch.float64)
    parts = qkv_new.reshape(b, 3, heads, c, t)
    qkv_legacy = parts.transpose(1, 2).reshape(b, 3 * heads * c, t)
    torch.testing.assert_close(qkv_attention(qkv_new, heads, legacy=False), qkv_attention(qkv_legacy, heads))
    one = torch.randn(b, 3 * c, t, dtype=torch.float64)
    torch.testing.assert_close(qkv_attention(one, 1, legacy=False), qkv_attention(one, 1))
