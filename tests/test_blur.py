"""Deblurring and colorization beyond the shared operator contract (tests/test_operators.py): the periodic
boundary rule against its explicit sum, the pseudo-inverse's cutoff, float32 stability, per-image motion
kernels (their generator, and their law against the reference package's), kernel files, the Wiener and gray
initializers, and the app's refusals (bad kernel file, negative sigma_y) before any output is written."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ccdf.initializers import Gray, Wiener
from ccdf.operators import Blur, Colorization, Inpainting, MotionBlur
from ccdf.operators.base import inner, measure
from ccdf.operators.blur import gaussian_kernel, motion_kernel
from tests.helpers import ROOT, app_cfg, gen, reconstruct, strip

FIXTURES = ROOT / "tests" / "fixtures"


def rand(*shape, seed=0):
    return torch.randn(shape, dtype=torch.float64, generator=gen(seed))


def periodic_convolution(k: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The boundary rule written out: y[i, j] = sum_ab k[a, b] x[(i - a + kh//2) % H, (j - b + kw//2) % W]."""
    kh, kw = k.shape
    h, w = x.shape
    y = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            for a in range(kh):
                for b in range(kw):
                    y[i, j] += k[a, b] * x[(i - a + kh // 2) % h, (j - b + kw // 2) % w]
    return y


@pytest.mark.parametrize("kshape,ishape", [((3, 4), (6, 5)), ((7, 5), (4, 6))])  # even width; kernel > image
def test_blur_is_the_periodic_convolution(kshape, ishape):
    k = rand(*kshape, seed=1).abs() + 0.05
    x = rand(1, 2, *ishape, seed=2)
    y = Blur(k)(x)
    kn = (k / k.sum()).numpy()
    for c in range(2):  # float64 FFT against the plain sum: rounding only
        np.testing.assert_allclose(y[0, c].numpy(), periodic_convolution(kn, x[0, c].numpy()), rtol=0, atol=1e-13)


def test_pinv_cutoff_is_an_orthogonal_projection_onto_the_pass_band():
    """Default tol (1e-4) on a Gaussian whose |K| spans 1 .. 1e-30: A^+ A keeps exactly the frequencies with
    |K| > tol max|K| (computed here with numpy), A^+ A is an orthogonal projector, and A(project(x, y))
    differs from y only outside the pass band, by K (X - R) there (at most tol |X - R|)."""
    op = Blur.gaussian(2.0, 15)
    kernel = op.kernel[0].numpy()
    grid = np.zeros((32, 32))
    for a in range(15):
        for b in range(15):
            grid[(a - 7) % 32, (b - 7) % 32] += kernel[a, b]
    K = np.fft.fft2(grid)
    assert op.tol == 1e-4
    keep = np.abs(K) > 1e-4 * np.abs(K).max()
    assert 0.1 < keep.mean() < 0.9  # both bands are there
    x, z, r = rand(1, 1, 32, 32, seed=3), rand(1, 1, 32, 32, seed=4), rand(1, 1, 32, 32, seed=5)
    px = op.pinv(op(x))
    np.testing.assert_allclose(px[0, 0].numpy(), np.fft.ifft2(keep * np.fft.fft2(x[0, 0].numpy())).real, atol=1e-12)
    torch.testing.assert_close(op.pinv(op(px)), px, rtol=0, atol=1e-12)
    assert abs(float(inner(px, z) - inner(x, op.pinv(op(z))))) < 1e-10
    y = op(r)
    resid = np.fft.fft2((op(op.project(x, y)) - y)[0, 0].numpy())
    assert np.abs(resid[keep]).max() < 1e-10
    expected = K * np.fft.fft2((x - r)[0, 0].numpy())
    np.testing.assert_allclose(resid[~keep], expected[~keep], atol=1e-10)
    assert np.all(np.abs(resid[~keep]) <= 1e-4 * np.abs(np.fft.fft2((x - r)[0, 0].numpy()))[~keep] + 1e-12)


def test_float32_projection_stays_close_to_float64():
    """DPS's Gaussian (61 x 61, std 3) on a smooth 64 x 64 image: with the default cutoff (1e-4) the float32
    projection equals the float64 one to 1e-3 (an eighth of an 8-bit level in model range; measured 1.5e-4);
    with no cutoff (tol = 0) 1 / K multiplies float32 rounding by up to 1e30 and the result is garbage
    (measured 1e11). This is what ``tol`` is for."""
    u = torch.linspace(0, 2 * math.pi, 64, dtype=torch.float64)
    x0 = (torch.sin(u)[:, None] * torch.cos(2 * u)[None, :])[None, None].expand(1, 3, 64, 64).contiguous()
    x = rand(1, 3, 64, 64, seed=6) * 0.3
    errors = []
    for op in (Blur.gaussian(3.0, 61), Blur.gaussian(3.0, 61, tol=0.0)):
        p64 = op.project(x, op(x0))
        p32 = op.project(x.float(), op(x0.float()))
        errors.append(float((p32.double() - p64).abs().max()))
    assert errors[0] < 1e-3 and errors[1] > 1.0, errors


def test_gaussian_kernel_formula():
    k = gaussian_kernel(1.5, (5, 6))  # even width: centred between two pixels, still symmetric
    u, v = np.arange(5) - 2.0, np.arange(6) - 2.5
    ref = np.exp(-(u[:, None] ** 2 + v[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), rtol=1e-14)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        Blur.gaussian(-1.0)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        Blur.gaussian(1.0, 0)


def test_per_image_kernels_select_and_batch_errors():
    k = torch.stack([gaussian_kernel(1.0, 5), torch.ones(5, 5, dtype=torch.float64)])
    op = Blur(k)
    x = rand(2, 3, 12, 12, seed=7)
    y = op(x)
    torch.testing.assert_close(y[1:], Blur(torch.ones(5, 5))(x[1:]), rtol=0, atol=1e-14)
    torch.testing.assert_close(op.select([1])(x[1:]), y[1:], rtol=0, atol=0)  # the batch's own spectra
    shared = Blur(k[0])
    assert shared.shared and shared.select([1]) is shared
    with pytest.raises(ValueError, match="expects batches of 2 images"):
        op(x[:1])
    with pytest.raises(ValueError, match=r"Blur expects \[B, C, H, W\]"):
        op(x[0])


def test_measurement_noise_of_a_blur_is_white_on_every_pixel():
    """y = A x0 + sigma_y n with n the generator's white noise, on every pixel (DPS, DiffPIR); a mask keeps
    the noise on the observed pixels only."""
    op = Blur.gaussian(2.0, 15)  # tol cuts most frequencies; the noise must not be cut with them
    x0 = rand(2, 3, 16, 16, seed=8)
    y = measure(op, x0, 0.1, [gen(1), gen(2)])
    n = torch.stack([torch.randn(3, 16, 16, generator=g, dtype=torch.float64) for g in (gen(1), gen(2))])
    torch.testing.assert_close(y, op(x0) + 0.1 * n, rtol=0, atol=1e-14)
    mask = Inpainting.random(16, 0.5, seed=0)
    y = measure(mask, x0, 0.1, [gen(1), gen(2)])
    torch.testing.assert_close(y, mask(x0) + 0.1 * mask(n), rtol=0, atol=1e-14)


# --------------------------------------------------------------------------------------------- motion blur
def test_motion_kernels_come_from_each_images_generator():
    op = MotionBlur(size=31, intensity=0.5)
    both = op.for_batch({}, [gen(5), gen(7)])
    alone = op.for_batch({}, [gen(7)])
    assert torch.equal(both.kernel[1], alone.kernel[0])  # an image's kernel does not depend on its batch
    assert torch.equal(both.select([1]).kernel, alone.kernel)
    assert not torch.equal(both.kernel[0], both.kernel[1])
    assert torch.equal(op.draw(gen(5)), both.kernel[0])
    k = both.kernel
    assert bool((k >= 0).all()) and torch.allclose(k.sum(dim=(-2, -1)), torch.ones(2, dtype=torch.float64))
    g = gen(5)
    op.for_batch({}, [g])
    assert not torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=gen(5)))  # its first draws
    with pytest.raises(RuntimeError, match="for_batch"):
        op(rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="intensity must be a number in"):
        MotionBlur(intensity=1.5)


def test_motion_kernels_follow_the_reference_law():
    """Our trajectories and rendering against the reference package's kernels (DPS / DiffPIR: 61 x 61,
    intensity 0.5): spread (radius of gyration: mean and quartiles) and effective area (1 / sum k^2, median),
    on 120 kernels of ours (seeds 0..119) against the fixture's statistics of 2000 reference kernels
    (tests/fixtures/motionblur/reference_stats.json, its provenance inside). The tolerances are about three
    standard errors of 120 draws (the gyration radius has a spread of about 6 px): a wrong path length,
    angle law or smoothing moves these by far more."""
    ref = json.loads((FIXTURES / "motionblur" / "reference_stats.json").read_text())["stats"]["61@0.5"]
    gyr, area = [], []
    r, c = np.mgrid[:61, :61]
    for s in range(120):
        k = motion_kernel(61, 0.5, gen(s)).numpy()
        mr, mc = (k * r).sum(), (k * c).sum()
        gyr.append(math.sqrt((k * ((r - mr) ** 2 + (c - mc) ** 2)).sum()))
        area.append(1 / (k**2).sum())
    assert abs(np.mean(gyr) - ref["gyration_mean"]) < 1.6
    for q, value in zip(np.quantile(gyr, [0.25, 0.5, 0.75]), ref["gyration_quantiles"], strict=True):
        assert abs(q - value) < 2.0
    assert abs(np.median(area) / ref["area_median"] - 1) < 0.2


# --------------------------------------------------------------------------------------------- kernel files
def test_kernel_files(tmp_path):
    k = np.zeros((5, 7))
    k[2, 1:6] = [1, 2, 3, 2, 1]
    np.save(tmp_path / "k.npy", k)
    op = Blur.from_file(tmp_path / "k.npy", size=[5, 7])
    np.testing.assert_allclose(op.kernel[0].numpy(), k / 9, rtol=1e-15)
    Image.fromarray((k * 50).astype(np.uint8)).save(tmp_path / "k.png")
    np.testing.assert_allclose(Blur.from_file(tmp_path / "k.png").kernel[0].numpy(), k / 9, rtol=1e-15)
    Image.fromarray(np.repeat((k * 50).astype(np.uint8)[..., None], 3, axis=2)).save(tmp_path / "gray_rgb.png")
    np.testing.assert_allclose(Blur.from_file(tmp_path / "gray_rgb.png").kernel[0].numpy(), k / 9, rtol=1e-15)


@pytest.mark.parametrize(
    "name,content,size,message",
    [
        ("stack.npy", np.ones((2, 5, 5)), None, r"holds an array of shape \[2, 5, 5\]; a blur kernel is 2-D"),
        ("k.npy", np.ones((5, 5)), [7, 7], r"holds a 5x5 kernel, but size=\[7, 7\] was asked for"),
        ("nan.npy", np.full((3, 3), np.nan), None, "non-finite"),
        ("zero.npy", np.zeros((3, 3)), None, "positive sum"),
        ("colour.png", np.dstack([np.eye(4) * 255, np.zeros((4, 4)), np.zeros((4, 4))]), None, "colour image"),
        ("text.npy", None, None, "cannot read the kernel file"),
        ("missing.npy", "absent", None, "kernel file not found"),
    ],
)
def test_bad_kernel_files_name_the_file(tmp_path, name, content, size, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray) and name.endswith(".npy"):
        np.save(path, content)
    elif isinstance(content, np.ndarray):
        Image.fromarray(content.astype(np.uint8)).save(path)
    elif content is None:
        path.write_text("not an array")
    with pytest.raises(ValueError) as err:
        Blur.from_file(path, size=size)
    assert str(path) in str(err.value) and str(err.value).startswith("path: ")
    assert re.search(message, str(err.value)), str(err.value)


# --------------------------------------------------------------------------------------------- initializers
def test_wiener_is_the_closed_form():
    """Blur: F^-1(conj(K) Y / (|K|^2 + nsr)) computed with numpy; a mask: m y / (1 + nsr); nsr = 0 on an
    invertible blur is its inverse; the default nsr follows sigma_y."""
    op = Blur.gaussian(1.0, 5)
    y = rand(1, 1, 16, 16, seed=9)
    grid = np.zeros((16, 16))
    for a in range(5):
        for b in range(5):
            grid[(a - 2) % 16, (b - 2) % 16] += op.kernel[0, a, b].item()
    K = np.fft.fft2(grid)
    ref = np.fft.ifft2(np.conj(K) * np.fft.fft2(y[0, 0].numpy()) / (np.abs(K) ** 2 + 0.01)).real
    np.testing.assert_allclose(Wiener(nsr=0.01)(y, op)[0, 0].numpy(), ref, atol=1e-12)
    exact = Blur.gaussian(1.0, 5, tol=1e-10)  # min |K| is 5e-4: an exact inverse
    torch.testing.assert_close(Wiener(nsr=0.0)(exact(y), exact), y, rtol=0, atol=1e-9)
    mask = Inpainting.random(16, 0.5, seed=1)
    torch.testing.assert_close(Wiener(nsr=0.25)(mask(y), mask), mask(y) / 1.25, rtol=0, atol=1e-15)
    assert Wiener(sigma_y=0.0).nsr == 1e-7 and Wiener(sigma_y=0.05).nsr == pytest.approx(0.035)
    assert Wiener(nsr=0.5, sigma_y=0.1).nsr == 0.5
    with pytest.raises(ValueError, match="nsr must be a finite number >= 0"):
        Wiener(nsr=-1.0)
    with pytest.raises(ValueError, match="sigma_y must be a finite number >= 0"):
        Wiener(sigma_y=-0.1)


def test_gray_initializer():
    op = Colorization()
    x0 = rand(2, 3, 8, 8, seed=10)
    y = op(x0)
    x = Gray()(y, op)
    torch.testing.assert_close(x, y.expand(2, 3, 8, 8), rtol=0, atol=1e-15)  # BT.601 weights sum to 1
    other = Colorization([0.2, 0.2, 0.2])  # any weighting: y / A(1) is consistent
    torch.testing.assert_close(other(Gray()(other(x0), other)), other(x0), rtol=0, atol=1e-14)
    # the pseudo-inverse is consistent too, but tinted (channels scaled by w / |w|^2), not gray
    p = op.pinv(y)
    torch.testing.assert_close(op(p), y, rtol=0, atol=1e-14)
    assert float((p[:, 1] - p[:, 0]).abs().max()) > 0.1
    with pytest.raises(TypeError, match="initializer=gray needs one-channel measurements"):
        Gray()(Blur.uniform(3)(x0), Blur.uniform(3))


def test_colorization_weights_and_errors():
    assert Colorization().weights.tolist() == [0.299, 0.587, 0.114]
    with pytest.raises(ValueError, match=r"Colorization expects \[B, 3, H, W\] images"):
        Colorization()(rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="weights must be"):
        Colorization([])


# --------------------------------------------------------------------------------------------- the app
@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task=deblur_gauss", "operator=deblur_file", "operator.path={bad}"],
         r"operator.path: kernel file {bad} holds an array of shape \[1, 5, 5\]; a blur kernel is 2-D"),
        (["task=deblur_gauss", "operator=deblur_file", "operator.path={good}", "operator.size=[7,7]"],
         r"operator.path: kernel file {good} holds a 5x5 kernel, but size=\[7, 7\] was asked for"),
        (["task=deblur_motion", "sigma_y=-0.1"], r"sigma_y must be in \[0, inf\), got -0.1"),
        (["task=colorize", "sigma_y=-0.1"], r"sigma_y must be in \[0, inf\), got -0.1"),
    ],
)  # fmt: skip
def test_the_app_refuses_bad_kernels_and_negative_noise_before_writing(tmp_path, overrides, message):
    """In process (ccdf.app.main): the error names the key and the file or value, is raised before any
    sampling, and the run leaves no folder and no cached result behind."""
    import ccdf.app as app

    bad, good = tmp_path / "stack.npy", tmp_path / "k5.npy"
    np.save(bad, np.ones((1, 5, 5)))
    np.save(good, np.ones((5, 5)))
    fill = {"bad": bad, "good": good}
    cfg = app_cfg(tmp_path, *[o.format(**fill) for o in overrides], "debug=smoke", "eval.fid=false",
                  "eval.lpips=false")  # fmt: skip
    with pytest.raises(ValueError) as err:
        app.main(cfg)
    assert re.search(message.format(**{k: re.escape(str(v)) for k, v in fill.items()}), str(err.value)), err.value
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_motion_deblurring_in_the_app_is_per_image_and_batch_invariant(tmp_path):
    """task=deblur_motion through the evaluation loop: rows and PNG bytes are identical for batch 1 and 3, and
    each image's initializer PSNR is the one of its own kernel, drawn first from the image's generator
    (seed, index), then its noise: recomputed here outside the app."""
    from ccdf.data import bundled_samples
    from ccdf.evaluation import to_unit
    from ccdf.metrics import psnr
    from ccdf.utils.rng import per_sample_generators

    base = ("task=deblur_motion", "dataset.size=16", "dataset.max_images=3", "sampler.num_steps=50",
            "sampler.t0=0.2", "operator.size=7", "sigma_y=0.02", "eval.fid=false", "eval.lpips=false")  # fmt: skip

    def run(name: str, *overrides: str) -> tuple[list[dict], list[bytes]]:
        m = reconstruct(tmp_path, name, *overrides, f"eval.cache_dir={tmp_path / name / 'cache'}", base=base)
        pngs = sorted((tmp_path / name / "recon").glob("*.png"))
        assert len(pngs) == 3 and m["nfe"] == 10
        return strip(m["per_image"]), [p.read_bytes() for p in pngs]

    rows1, png1 = run("b1", "batch_size=1")
    rows3, png3 = run("b3", "batch_size=3")
    assert rows3 == rows1 and png3 == png1
    data = bundled_samples("ffhq", "eval", size=16)
    kernels = []
    for i, row in enumerate(rows1):
        gens = per_sample_generators(0, [i])
        op = MotionBlur(7, 0.5).for_batch({}, gens)
        x0 = data[i]["x0"][None]
        x_init = Wiener(sigma_y=0.02)(measure(op, x0, 0.02, gens), op)
        assert row["init_psnr"] == pytest.approx(float(psnr(to_unit(x_init), to_unit(x0), torch.ones(1))), abs=1e-5)
        kernels.append(op.kernel[0])
    assert not torch.equal(kernels[0], kernels[1]) and not torch.equal(kernels[1], kernels[2])
