"""Operator contracts in float64: adjointness, pseudo-inverse, projection (consistent, idempotent,
non-expansive), plus the MRI masks' realised acceleration and clear shape errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ccdf.operators import (
    Blur,
    CoilKSpace,
    Colorization,
    Inpainting,
    MotionBlur,
    MultiCoilMRI,
    Operator,
    SingleCoilMRI,
    SuperResolution,
    cartesian_mask,
    fft2c,
    ifft2c,
    poisson_mask,
)
from ccdf.operators.base import inner, measure
from tests.helpers import gen


class CGPinv(Operator):
    """Wraps an operator but keeps the base class's conjugate-gradient pinv/project."""

    def __init__(self, op: Operator) -> None:
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)

    def adjoint(self, y):
        return self.op.adjoint(y)


def make_operator(name: str, tmp_path=None) -> tuple[Operator, tuple[int, ...], bool]:
    """(operator, image shape, complex?) for each operator the project ships."""
    if name == "inpaint_box":
        return Inpainting.box(16, 6), (2, 3, 16, 16), False
    if name == "inpaint_random":
        return Inpainting.random(16, 0.7, seed=3), (2, 3, 16, 16), False
    if name == "inpaint_half":
        return Inpainting.half(16, "left"), (2, 1, 16, 16), False
    if name == "inpaint_file":
        arr = np.zeros((16, 16), dtype=np.uint8)
        arr[::2] = 255
        path = tmp_path / "mask.png"
        Image.fromarray(arr).save(path)
        return Inpainting.from_file(path, 16), (2, 3, 16, 16), False
    if name.startswith("sr_"):
        _, kernel, factor = name.split("_")
        f = int(factor[1:])
        return SuperResolution(f, kernel=kernel), (2, 3, 2 * f, 3 * f), False
    if name.startswith("mri_"):
        _, pattern, acc = name.split("_")
        a = int(acc[1:])
        return SingleCoilMRI.cartesian(32, a, 0.08 if a == 4 else 0.04, pattern, seed=1), (2, 1, 32, 32), True
    # blurs with an exact pseudo-inverse in float64 (tol 1e-10; the default cutoff: tests/test_blur.py)
    if name == "blur_gauss":
        return Blur.gaussian(1.0, 5, tol=1e-10), (2, 3, 16, 16), False
    if name == "blur_uniform":  # |K| = 0 exactly at 3 of 16 frequencies per axis: a true null space
        return Blur.uniform(4, tol=1e-10), (2, 3, 16, 16), False
    if name == "blur_file":  # an asymmetric kernel of even width from a .npy file
        np.save(tmp_path / "kernel.npy", torch.rand(3, 4, generator=gen(0), dtype=torch.float64).numpy() + 0.1)
        return Blur.from_file(tmp_path / "kernel.npy", tol=1e-10), (2, 3, 16, 16), False
    if name == "blur_motion":  # per-image kernels, as the evaluation loop builds them
        return MotionBlur(9, 0.5, tol=1e-10).for_batch({}, [gen(0), gen(1)]), (2, 3, 16, 16), False
    if name == "blur_complex":
        return Blur.gaussian(1.0, 5, tol=1e-10), (2, 1, 16, 16), True
    if name == "colorize":
        return Colorization(), (2, 3, 16, 16), False
    if name == "cg_colorize":
        return CGPinv(Colorization()), (2, 3, 8, 8), False
    if name == "cg_sr_bicubic_x4":
        return CGPinv(SuperResolution(4, "bicubic")), (2, 3, 16, 16), False
    if name == "cg_mri":
        return CGPinv(SingleCoilMRI.cartesian(16, 4, 0.125, "uniform", seed=0)), (2, 1, 16, 16), True
    if name.startswith("mc_"):  # multi-coil SENSE: random complex maps, normalised to sum_c |S_c|^2 = 1
        return make_multicoil(name), (2, 1, 16, 16), True
    if name == "coil_kspace":
        return CoilKSpace(poisson_mask(16, 2, 4, seed=1)), (2, 4, 16, 16), True
    raise KeyError(name)


def random_maps(shape, seed: int) -> torch.Tensor:
    """Smooth-ish random complex coil maps normalised to sum_c |S_c|^2 = 1 (float64)."""
    maps = rand(shape, True, seed)
    maps = maps + 2.0  # a common part: well conditioned but not trivially so
    return maps / maps.abs().pow(2).sum(-3, keepdim=True).sqrt()


def make_multicoil(name: str) -> Operator:
    """``mc_cols`` (shared maps, 1-D column mask: the exact per-row solve), ``mc_cols_batch`` (maps per image),
    ``mc_poisson`` (2-D Poisson-disc mask: conjugate gradients), ``mc_cols_zero`` (maps vanish on a band: null space)."""
    mask = cartesian_mask(16, 4, 0.125, "uniform", seed=2)
    if name == "mc_cols":
        return MultiCoilMRI(mask, random_maps((4, 16, 16), 10), 16)
    if name == "mc_cols_batch":
        return MultiCoilMRI(mask, random_maps((2, 4, 16, 16), 11), 16)
    if name == "mc_poisson":
        return MultiCoilMRI(poisson_mask(16, 2, 4, seed=1), random_maps((4, 16, 16), 12))
    if name == "mc_cols_zero":
        maps = random_maps((4, 16, 16), 13)
        maps[:, :, :3] = 0  # outside the "support" (ESPIRiT crops its maps): a null space of A
        return MultiCoilMRI(mask, maps, 16)
    raise KeyError(name)


OPERATORS = [
    "inpaint_box",
    "inpaint_random",
    "inpaint_half",
    "inpaint_file",
    "sr_box_x4",
    "sr_box_x8",
    "sr_box_x16",
    "sr_bicubic_x4",
    "sr_bicubic_x8",
    "sr_bicubic_x16",
    "mri_uniform_x4",
    "mri_uniform_x6",
    "mri_uniform_x8",
    "mri_gaussian_x4",
    "mri_gaussian_x8",
    "blur_gauss",
    "blur_uniform",
    "blur_file",
    "blur_motion",
    "blur_complex",
    "colorize",
    "cg_colorize",
    "cg_sr_bicubic_x4",
    "cg_mri",
    "mc_cols",
    "mc_cols_batch",
    "mc_poisson",
    "mc_cols_zero",
    "coil_kspace",
]


def rand(shape, is_complex: bool, seed: int) -> torch.Tensor:
    x = torch.randn(shape, dtype=torch.float64, generator=gen(seed))
    if is_complex:
        x = torch.complex(x, torch.randn(shape, dtype=torch.float64, generator=gen(seed + 100)))
    return x


@pytest.mark.parametrize("name", OPERATORS)
def test_adjoint(name, tmp_path):
    op, shape, cplx = make_operator(name, tmp_path)
    x = rand(shape, cplx, 0)
    v = rand(op(x).shape, cplx, 1)
    lhs, rhs = inner(op(x), v), inner(x, op.adjoint(v))
    assert torch.allclose(lhs, rhs, atol=1e-8 * float(lhs.abs().max()), rtol=0), (lhs, rhs)


@pytest.mark.parametrize("name", OPERATORS)
def test_pinv_solves_consistent_systems(name, tmp_path):
    op, shape, cplx = make_operator(name, tmp_path)
    y = op(rand(shape, cplx, 2))
    x_pinv = op.pinv(y)
    torch.testing.assert_close(op(x_pinv), y, atol=1e-8, rtol=1e-8)
    # minimum norm: A^+ y lies in range(A^H), so projecting it onto null(A) gives 0
    torch.testing.assert_close(op.project(x_pinv, y), x_pinv, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", OPERATORS)
def test_project_is_consistent_idempotent_nonexpansive(name, tmp_path):
    op, shape, cplx = make_operator(name, tmp_path)
    x, z, r = (rand(shape, cplx, i) for i in (3, 4, 5))
    y = op(r)
    p = op.project(x, y)
    torch.testing.assert_close(op(p), y, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(op.project(p, y), p, atol=1e-8, rtol=1e-8)
    for b in range(shape[0]):
        d_proj = (op.project(x, y) - op.project(z, y))[b].abs().norm()
        assert d_proj <= (x - z)[b].abs().norm() + 1e-10
    # the projection is orthogonal: x - P(x) is orthogonal to null(A) (P(x) - P(z) lies in it)
    assert inner(x - p, op.project(z, y) - p).abs().max() < 1e-8 * float((x - p).abs().norm() ** 2)


@pytest.mark.parametrize("name", OPERATORS)
def test_shape_mismatch_is_a_clear_error(name, tmp_path):
    op, shape, cplx = make_operator(name, tmp_path)
    if name.startswith(("sr_", "cg_sr")):
        bad = rand(shape[:2] + (shape[2] + 1, shape[3]), cplx, 0)
        with pytest.raises(ValueError, match="divisible"):
            op(bad)
    elif name.startswith(("blur_", "colorize", "cg_colorize")):  # a blur takes any H, W; images are [B, C, H, W]
        with pytest.raises(ValueError, match="expects"):
            op(rand(shape[1:], cplx, 0))
    else:
        bad = rand(shape[:2] + (shape[2] + 2, shape[3]), cplx, 0)
        with pytest.raises(ValueError, match="expects"):
            op(bad)


@pytest.mark.parametrize("acc,cf", [(4, 0.08), (6, 0.06), (8, 0.04)])
@pytest.mark.parametrize("pattern", ["uniform", "gaussian"])
@pytest.mark.parametrize("width", [320, 368, 100])
def test_mri_mask_hits_requested_acceleration(acc, cf, pattern, width):
    mask = cartesian_mask(width, acc, cf, pattern, seed=7)
    assert int(mask.sum()) == round(width / acc)
    # realised acceleration equals the requested one up to the rounding of the column count
    assert abs(width / float(mask.sum()) - acc) <= acc**2 / width + 1e-12
    centre = round(width * cf)
    start = width // 2 - centre // 2
    assert bool(mask[start : start + centre].all()), "fully sampled centre"
    op = SingleCoilMRI(mask, image_size=(8, width))
    assert op.acceleration == pytest.approx(width / round(width / acc))


def test_mri_masks_differ_by_pattern_and_seed():
    a = cartesian_mask(320, 4, 0.08, "uniform", seed=0)
    assert not torch.equal(a, cartesian_mask(320, 4, 0.08, "uniform", seed=1))
    assert torch.equal(a, cartesian_mask(320, 4, 0.08, "uniform", seed=0))
    g = cartesian_mask(320, 8, 0.04, "gaussian", seed=0)
    # the Gaussian density concentrates samples near the centre
    idx = g.nonzero().reshape(-1).double()
    u = cartesian_mask(320, 8, 0.04, "uniform", seed=0).nonzero().reshape(-1).double()
    assert (idx - 160).abs().mean() < (u - 160).abs().mean()


def test_centre_only_mask():
    """When the centre already uses every allowed column, the mask is the centre alone."""
    mask = cartesian_mask(16, 4, 0.25)
    assert int(mask.sum()) == 4 and bool(mask[6:10].all())


def test_mask_errors():
    with pytest.raises(ValueError, match="center_fraction"):
        cartesian_mask(100, 8, 0.5)
    with pytest.raises(ValueError, match="pattern"):
        cartesian_mask(100, 4, 0.08, "poisson")
    with pytest.raises(ValueError, match="0 or 1"):
        Inpainting(torch.full((4, 4), 0.5))
    with pytest.raises(FileNotFoundError, match="mask file not found"):
        Inpainting.from_file("/nonexistent/mask.png", 16)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: cartesian_mask(100, 4, -0.1), r"center_fraction must be in \[0, 1\), got -0.1"),  # ran with no centre
        (lambda: cartesian_mask(100, 4, float("nan")), r"center_fraction must be in \[0, 1\), got nan"),
        (lambda: cartesian_mask(100, float("nan"), 0.08), "acceleration must be >= 1, got nan"),
        (lambda: cartesian_mask(100.5, 4, 0.08), "image_size .* must be a positive integer, got 100.5"),
        (lambda: Inpainting.random(16, float("nan")), r"ratio .* must be in \[0, 1\), got nan"),
        (lambda: Inpainting.box(16, 0), "box_size must be a positive integer"),
        (lambda: Inpainting.box(16.5, 4), "image_size must be a positive integer"),  # was truncated to 16
        (lambda: SuperResolution(2.5), "factor must be a positive integer, got 2.5"),  # was truncated to 2
    ],
)
def test_operator_values_out_of_range(make, message):
    """Each message starts with the argument's name (the app prefixes the config key: operator.<name>)."""
    with pytest.raises(ValueError, match=message):
        make()


def test_fft2c_is_unitary_and_centred():
    x = rand((1, 1, 8, 8), True, 0)
    torch.testing.assert_close(ifft2c(fft2c(x)), x)
    torch.testing.assert_close(fft2c(x).abs().norm(), x.abs().norm())
    const = torch.ones(1, 1, 8, 8, dtype=torch.complex128)
    k = fft2c(const)
    assert k[0, 0, 4, 4].abs() == pytest.approx(8.0) and k.abs().sum() == pytest.approx(8.0)


def test_bicubic_superres_is_torch_antialiased_bicubic():
    x = rand((2, 3, 32, 64), False, 0)
    for f in (4, 8, 16):
        ref = F.interpolate(x, size=(32 // f, 64 // f), mode="bicubic", antialias=True, align_corners=False)
        torch.testing.assert_close(SuperResolution(f, "bicubic")(x), ref)


def test_box_superres_closed_forms():
    op = SuperResolution(4, "box")
    x = rand((1, 2, 8, 8), False, 0)
    torch.testing.assert_close(op(x), F.avg_pool2d(x, 4))
    y = op(x)
    torch.testing.assert_close(op.pinv(y), F.interpolate(y, scale_factor=4, mode="nearest"))
    torch.testing.assert_close(op.adjoint(y), F.interpolate(y, scale_factor=4, mode="nearest") / 16)


@pytest.mark.parametrize("name", ["inpaint_random", "sr_bicubic_x4", "mri_uniform_x4"])
def test_measurement_noise_lives_on_the_range(name, tmp_path):
    op, shape, cplx = make_operator(name, tmp_path)
    x = rand(shape, cplx, 0)
    y = measure(op, x, 0.1, gen(0))
    noise = y - op(x)
    # noise is in range(A): A A^+ n = n
    torch.testing.assert_close(op(op.pinv(noise)), noise, atol=1e-10, rtol=0)
    n_meas = float(op(op.pinv(torch.ones_like(y).abs() if not cplx else torch.ones_like(y))).abs().pow(2).sum())
    per_component = float(noise.abs().pow(2).sum()) / (n_meas * (2 if cplx else 1))
    assert per_component == pytest.approx(0.01, rel=0.35)
    with pytest.raises(ValueError, match="sigma_y"):
        measure(op, x, -1.0)
