"""LPIPS through torchmetrics with the backbone from a local file (the heads come with torchmetrics): equal to
torchmetrics' own LPIPS and to the previous hand-written implementation on the same weights, metric
properties, and clear errors for a missing or malformed backbone file (network blocked)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from ccdf.metrics import LPIPS, WEIGHT_FILES, CorruptWeightsError, MissingWeightsError, load_lpips
from tests.helpers import gen, torchmetrics_lpips_and_files
from tests.helpers import previous_metrics as previous

# torchmetrics ships the lpips v0.1 heads (alex.pth, vgg.pth); ccdf.metrics.lpips reads them from there
TM_HEADS = Path(next(iter(importlib.util.find_spec("torchmetrics").submodule_search_locations)))
TM_HEADS = TM_HEADS / "functional" / "image" / "lpips_models"


class NotAllowed:
    """An arbitrary pickled object: ``torch.load(weights_only=True)`` refuses to rebuild it."""


def backbone_state(net: str, seed: int) -> dict[str, torch.Tensor]:
    """A torchvision-format ``features.*`` state with He-uniform conv weights drawn from ``seed``
    (the generator of ``tests/fixtures/metrics/previous_metrics.npz``'s LPIPS backbones)."""
    import torchvision

    with torch.device("meta"):
        features = getattr(torchvision.models, {"alex": "alexnet", "vgg": "vgg16"}[net])(weights=None).features
    g, state = gen(seed), {}
    for i, m in enumerate(features):
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            bound = math.sqrt(6 / fan_in)
            state[f"features.{i}.weight"] = (torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound
            state[f"features.{i}.bias"] = (torch.rand(m.bias.shape, generator=g) * 2 - 1) * 0.05
    return state


@pytest.mark.parametrize(("net", "size"), [("alex", 64), ("vgg", 32)])
def test_equals_torchmetrics_on_the_same_weights(net, size, tmp_path, no_network):
    theirs = torchmetrics_lpips_and_files(net, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # the backbone only: the heads come with torchmetrics
    ours = load_lpips(tmp_path, net=net)
    x = torch.rand(3, 3, size, size, generator=gen(1)) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen(2))).clamp(-1, 1)
    with torch.no_grad():
        expected = theirs(x, y).reshape(-1)
        got = ours(x, y)
    assert got.shape == (3,) and (expected > 1e-3).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("net", "seed"), [("alex", 20), ("vgg", 21)])
def test_equals_the_previous_implementation(net, seed, tmp_path, no_network):
    """The numbers of ccdf's hand-written LPIPS at commit 61fab1b (``previous_metrics.npz``: its
    ``load_lpips`` with the backbone ``backbone_state(net, seed)`` and torchmetrics' bundled heads, on
    uint8 images mapped to [-1, 1]). Float32 convolutions may sum in another order on another CPU, and
    the two normalise features with eps 1e-10 outside / 1e-8 inside the square root: rtol 1e-5."""
    p = previous()
    torch.save(backbone_state(net, seed), tmp_path / WEIGHT_FILES[{"alex": "alexnet", "vgg": "vgg16"}[net]].filename)
    x, y = p[f"lpips_{net}_x_u8"] / 127.5 - 1, p[f"lpips_{net}_y_u8"] / 127.5 - 1
    with torch.no_grad():
        got = load_lpips(tmp_path, net=net)(x, y)
    assert (p[f"lpips_{net}"] > 0.01).all()
    torch.testing.assert_close(got, p[f"lpips_{net}"], rtol=1e-5, atol=0)


def test_metric_properties(tmp_path, no_network):
    torchmetrics_lpips_and_files("alex", tmp_path)
    lpips = load_lpips(tmp_path)
    x = torch.rand(2, 3, 64, 64, generator=gen(3)) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=gen(4)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(lpips(x, x), torch.zeros(2))
        torch.testing.assert_close(lpips(x, y), lpips(y, x), rtol=0, atol=0)
        assert (lpips(x, y) > 0.01).all()
    x.requires_grad_(True)  # usable as a loss: gradients reach the input, the weights stay frozen
    lpips(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())
    lpips.train()
    assert not lpips.training


@pytest.mark.parametrize(("net", "key"), [("alex", "alexnet"), ("vgg", "vgg16")])
def test_a_missing_backbone_is_named_with_its_url(net, key, tmp_path, no_network):
    with pytest.raises(MissingWeightsError) as info:
        load_lpips(tmp_path / "weights", net=net)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    spec = WEIGHT_FILES[key]
    assert str(tmp_path / "weights" / spec.filename) in msg and spec.url in msg
    assert "curl -L -o" in msg
    assert f"{net}.pth" not in msg and "PerceptualSimilarity" not in msg  # no linear-head file is asked for


def test_malformed_files_are_reported(tmp_path, no_network):
    backbone = tmp_path / WEIGHT_FILES["alexnet"].filename
    vgg = backbone_state("vgg", 0)  # the VGG backbone: some keys alike, other shapes
    torch.save(vgg, backbone)
    with pytest.raises(
        CorruptWeightsError, match=r"features\.10\.weight: shape \(256, 128, 3, 3\), expected \(256, 256, 3, 3\)"
    ):
        load_lpips(tmp_path)
    torch.save({**backbone_state("alex", 0), "features.1.weight": torch.zeros(1)}, backbone)
    with pytest.raises(CorruptWeightsError, match=r"unexpected keys: \['features\.1\.weight'\]"):
        load_lpips(tmp_path)
    torch.save({k: v for k, v in backbone_state("alex", 0).items() if k != "features.10.bias"}, backbone)
    with pytest.raises(CorruptWeightsError, match=r"missing keys: \['features\.10\.bias'\]"):
        load_lpips(tmp_path)

    backbone.write_bytes(b"truncated")
    with pytest.raises(CorruptWeightsError, match="not a readable PyTorch checkpoint") as info:
        load_lpips(tmp_path)
    assert str(backbone) in str(info.value) and WEIGHT_FILES["alexnet"].url in str(info.value)

    torch.save({"features.0.weight": NotAllowed()}, backbone)
    with pytest.raises(CorruptWeightsError, match="not a readable PyTorch checkpoint"):
        load_lpips(tmp_path)


def test_random_lpips_builds_without_weights():
    lpips = LPIPS("vgg")
    assert [lin.model[-1].weight.shape[1] for lin in lpips.lins] == [64, 128, 256, 512, 512]
    heads = torch.load(
        TM_HEADS / "vgg.pth", map_location="cpu", weights_only=True
    )  # the published heads, from torchmetrics' wheel
    for i, lin in enumerate(lpips.lins):
        assert torch.equal(lin.model[-1].weight, heads[f"lin{i}.model.1.weight"])
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("squeeze")


def test_a_torchmetrics_without_its_private_lpips_is_named(monkeypatch):
    """ccdf reads torchmetrics' private LPIPS module (_NoTrainLpips and the heads beside it): a release that moves
    it gives an error naming the version and the way out, not an AttributeError deep inside."""
    from torchmetrics.functional.image import lpips as tm

    monkeypatch.delattr(tm, "_NoTrainLpips")
    with pytest.raises(RuntimeError, match=r"torchmetrics .* has no _NoTrainLpips .* eval.lpips=false"):
        LPIPS("alex")
