"""The blur and colorization operators against deepinv's physics (a test-only dependency, in the dev extra) on
the same kernels and weights, in float64: forward, adjoint, and the closed-form prox and pseudo-inverse.
Tolerances are float64 FFT rounding (about 1e-15 of the data), not bit equality: the two sides compute the
same transforms in different orders."""

from __future__ import annotations

import deepinv
import pytest
import torch

from ccdf.operators import Blur, Colorization, MotionBlur
from ccdf.operators.blur import gaussian_kernel
from ccdf.operators.color import BT601
from tests.helpers import gen

ATOL = 1e-12


def rand(*shape, seed=0):
    return torch.randn(shape, dtype=torch.float64, generator=gen(seed))


def kernels():
    """Odd and even sizes, asymmetric (a wrong centre or a flip would show)."""
    odd = torch.rand(5, 5, generator=gen(0), dtype=torch.float64) + 0.1
    even = torch.rand(4, 6, generator=gen(1), dtype=torch.float64) + 0.1
    return {"odd": odd / odd.sum(), "even": even / even.sum(), "gauss": gaussian_kernel(2.0, 9)}


@pytest.mark.parametrize("name", ["odd", "even", "gauss"])
def test_blur_equals_deepinv_circular_blur_and_blur_fft(name):
    k = kernels()[name]
    ours = Blur(k)
    x, v = rand(2, 3, 16, 12, seed=2), rand(2, 3, 16, 12, seed=3)
    for physics in (
        deepinv.physics.Blur(filter=k[None, None], padding="circular"),
        deepinv.physics.BlurFFT(img_size=(3, 16, 12), filter=k[None, None]),
    ):
        torch.testing.assert_close(ours(x), physics.A(x), rtol=0, atol=ATOL)
        torch.testing.assert_close(ours.adjoint(v), physics.A_adjoint(v), rtol=0, atol=ATOL)


def test_blur_prox_and_pinv_equal_deepinv_blur_fft():
    """deepinv's ``prox_l2(z, y, gamma)`` = argmin 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2, i.e. ours with
    lam = 1 / gamma; ``A_dagger`` is the Fourier pseudo-inverse (a kernel with every |K| above both cutoffs)."""
    k = kernels()["odd"]
    ours, physics = Blur(k), deepinv.physics.BlurFFT(img_size=(3, 16, 12), filter=k[None, None])
    assert float(ours.spectrum((16, 12)).abs().min()) > 0.01
    z, y = rand(2, 3, 16, 12, seed=4), ours(rand(2, 3, 16, 12, seed=5))
    for lam in (0.05, 1.0):
        torch.testing.assert_close(ours.prox(z, y, lam), physics.prox_l2(z, y, 1 / lam), rtol=0, atol=1e-11)
    torch.testing.assert_close(ours.pinv(y), physics.A_dagger(y), rtol=0, atol=1e-11)


def test_per_image_motion_kernels_equal_deepinv_batched_filters():
    ours = MotionBlur(size=9, intensity=0.5).for_batch({}, [gen(0), gen(1)])
    physics = deepinv.physics.Blur(filter=ours.kernel[:, None], padding="circular")
    x, v = rand(2, 3, 16, 16, seed=6), rand(2, 3, 16, 16, seed=7)
    torch.testing.assert_close(ours(x), physics.A(x), rtol=0, atol=ATOL)
    torch.testing.assert_close(ours.adjoint(v), physics.A_adjoint(v), rtol=0, atol=ATOL)


def test_gaussian_kernel_equals_deepinvs():
    theirs = deepinv.physics.functional.gaussian_blur(psf_size=(15, 15), sigma=(2.0, 2.0), dtype=torch.float64)
    torch.testing.assert_close(gaussian_kernel(2.0, 15), theirs[0, 0], rtol=0, atol=1e-15)


def test_colorization_equals_deepinv_decolorize():
    """deepinv's ``Decolorize`` with our BT.601 weights as its spectral response (it stores them in float32, so
    ours gets the same float32-rounded weights as its parameter); forward, adjoint and pseudo-inverse. Its
    ``rec601`` default is the same standard, rounded (0.4472 * 0.66851 = 0.29896, ...)."""
    physics = deepinv.physics.Decolorize(srf=list(BT601)).double()
    weights = physics.srf.flatten().tolist()
    assert max(abs(a - b) for a, b in zip(weights, BT601, strict=True)) < 3e-8  # float32 rounding only
    ours = Colorization(weights)
    x, v = rand(2, 3, 8, 8, seed=8), rand(2, 1, 8, 8, seed=9)
    torch.testing.assert_close(ours(x), physics.A(x), rtol=0, atol=1e-15)
    torch.testing.assert_close(ours.adjoint(v), physics.A_adjoint(v), rtol=0, atol=1e-15)
    # deepinv's A_dagger divides by |w|^2 with |w| computed in float32 when it was built: 1e-7 relative
    torch.testing.assert_close(ours.pinv(v), physics.A_dagger(v), rtol=2e-7, atol=0)
    default = deepinv.physics.Decolorize().srf.flatten().double()
    torch.testing.assert_close(default, torch.tensor(BT601, dtype=torch.float64), rtol=0, atol=1e-4)
