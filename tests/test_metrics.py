"""Metrics against torchmetrics and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ccdf.metrics import mse, nmse, psnr, ssim
from tests.helpers import gen


def _pair():
    x = torch.rand(3, 3, 40, 48, dtype=torch.float64, generator=gen(0))
    y = (x + 0.1 * torch.randn(x.shape, dtype=torch.float64, generator=gen(1))).clamp(0, 1)
    return x, y


def test_psnr_matches_torchmetrics_and_definition():
    x, y = _pair()
    ref = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    torch.testing.assert_close(psnr(x, y), ref)
    torch.testing.assert_close(psnr(x, y, 2.0), ref + 20 * math.log10(2))
    torch.testing.assert_close(psnr(x, y), -10 * torch.log10(mse(x, y)))


def test_ssim_matches_torchmetrics_with_reflect_border():
    x, y = _pair()
    ref = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    torch.testing.assert_close(ssim(x, y, border="reflect"), ref)


def test_ssim_properties():
    x, y = _pair()
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert bool((ssim(x, y) < 1).all())
    torch.testing.assert_close(ssim(x, y), ssim(y, x))
    with pytest.raises(ValueError, match="border"):
        ssim(x, y, border="zero")


def test_nmse():
    x, _ = _pair()
    torch.testing.assert_close(nmse(1.1 * x, x), torch.full((3,), 0.01, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        nmse(x, x[:, :1])
