"""Metrics against torchmetrics, closed forms and the values of the hand-written versions they replaced."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ccdf.metrics import mse, nmse, psnr, ssim
from tests.helpers import gen, previous_metrics


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


def test_equal_to_the_previous_hand_written_metrics():
    """torchmetrics-based PSNR/SSIM give the numbers the hand-written versions gave, per image, with the
    same data-range handling ([0, 1] images with range 1; MRI magnitudes with a per-image range).

    SSIM: both run the same float64 convolutions (observed equal to the last bit); rtol 1e-12 allows
    another summation order on another CPU. PSNR: the old version took the MSE of float32 images in
    float32 (the new one in float64), a relative error ~1e-7 in the MSE, i.e. ~1e-6 dB: atol 1e-5 dB.
    """
    p = previous_metrics()
    a, b = p["img_a_u8"] / 255, p["img_b_u8"] / 255
    rec, ref, rng = p["mri_rec"], p["mri_ref"], p["mri_range"]
    torch.testing.assert_close(psnr(b, a), p["img_psnr"], rtol=0, atol=1e-5)
    torch.testing.assert_close(psnr(a, a), p["img_psnr_same"], rtol=0, atol=0)  # 200 dB, not inf
    torch.testing.assert_close(ssim(b, a), p["img_ssim"], rtol=1e-12, atol=0)
    torch.testing.assert_close(ssim(b, a, border="reflect"), p["img_ssim_reflect"], rtol=1e-12, atol=0)
    torch.testing.assert_close(psnr(rec, ref, rng), p["mri_psnr"], rtol=0, atol=1e-5)
    torch.testing.assert_close(psnr(rec[:1], ref[:1], rng[:1]), p["mri_psnr_first"], rtol=0, atol=1e-5)
    torch.testing.assert_close(ssim(rec, ref, rng), p["mri_ssim"], rtol=1e-12, atol=0)
    torch.testing.assert_close(nmse(rec, ref), p["mri_nmse"], rtol=1e-6, atol=0)
    assert not torch.allclose(p["img_ssim"], p["img_ssim_reflect"], rtol=1e-4, atol=0)  # the borders differ


def test_per_image_data_range_equals_per_item_calls():
    """A range per image scores each image as a call with its own number would (torchmetrics itself
    takes one number); identical images give 10 log10(range^2 / 1e-20) dB."""
    x, y = _pair()
    r = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    xs, ys = x * r.view(-1, 1, 1, 1), y * r.view(-1, 1, 1, 1)
    for metric in (psnr, ssim):
        each = torch.cat([metric(xs[i : i + 1], ys[i : i + 1], float(r[i])) for i in range(3)])
        torch.testing.assert_close(metric(xs, ys, r), each, rtol=1e-12, atol=0)
        torch.testing.assert_close(metric(xs, ys, r), metric(x, y), rtol=1e-12, atol=0)  # scale invariance
    torch.testing.assert_close(psnr(xs, xs, r), 200 + 20 * torch.log10(r), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="one value per image"):
        psnr(x, y, torch.ones(2))
