"""LPIPS from local files: equal to torchmetrics' copy of the reference implementation on the same
weights, metric properties, and clear errors for missing or malformed files (network blocked)."""

from __future__ import annotations

import pytest
import torch

from ccdf.metrics import LPIPS, WEIGHT_FILES, CorruptWeightsError, MissingWeightsError, load_lpips
from tests.helpers import gen, torchmetrics_heads, torchmetrics_lpips_and_files

TM_HEADS = torchmetrics_heads()


class NotAllowed:
    """An arbitrary pickled object: ``torch.load(weights_only=True)`` refuses to rebuild it."""


@pytest.mark.parametrize(("net", "size"), [("alex", 64), ("vgg", 32)])
def test_equals_torchmetrics_on_the_same_weights(net, size, tmp_path, no_network):
    theirs = torchmetrics_lpips_and_files(net, tmp_path)
    ours = load_lpips(tmp_path, net=net)
    x = torch.rand(3, 3, size, size, generator=gen(1)) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen(2))).clamp(-1, 1)
    with torch.no_grad():
        expected = theirs(x, y).reshape(-1)
        got = ours(x, y)
    assert got.shape == (3,) and (expected > 1e-3).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


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


def test_missing_files_are_all_named_with_urls(tmp_path, no_network):
    with pytest.raises(MissingWeightsError) as info:
        load_lpips(tmp_path / "weights")
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    for key in ("alexnet", "lpips_alex"):
        spec = WEIGHT_FILES[key]
        assert str(tmp_path / "weights" / spec.filename) in msg and spec.url in msg
    assert "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth" in msg
    assert "curl -L -o" in msg


def test_malformed_files_are_reported(tmp_path, no_network):
    torchmetrics_lpips_and_files("alex", tmp_path)
    heads = tmp_path / "alex.pth"
    backbone = tmp_path / WEIGHT_FILES["alexnet"].filename

    heads.write_bytes((TM_HEADS / "vgg.pth").read_bytes())  # the VGG heads: right keys, wrong shapes
    with pytest.raises(
        CorruptWeightsError, match=r"lin1\.model\.1\.weight: shape \(1, 128, 1, 1\), expected \(1, 192, 1, 1\)"
    ):
        load_lpips(tmp_path)
    torch.save({"lin0.weight": torch.zeros(1, 64, 1, 1)}, heads)
    with pytest.raises(CorruptWeightsError, match="missing keys") as info:
        load_lpips(tmp_path)
    assert "unexpected keys: ['lin0.weight']" in str(info.value)

    heads.write_bytes((TM_HEADS / "alex.pth").read_bytes())
    backbone.write_bytes(b"truncated")
    with pytest.raises(CorruptWeightsError, match="not a readable PyTorch checkpoint") as info:
        load_lpips(tmp_path)
    assert str(backbone) in str(info.value) and WEIGHT_FILES["alexnet"].url in str(info.value)

    torch.save({"features.0.weight": NotAllowed()}, backbone)
    with pytest.raises(CorruptWeightsError, match="not a readable PyTorch checkpoint"):
        load_lpips(tmp_path)


def test_random_lpips_builds_without_weights():
    lpips = LPIPS("vgg")
    assert [lin.weight.shape[1] for lin in lpips.lins] == [64, 128, 256, 512, 512]
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS("squeeze")
