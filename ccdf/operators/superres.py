"""Super-resolution: separable down-sampling A x = D_h x D_w^T per channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ccdf.operators.base import Operator

KERNELS = ("box", "bicubic")


def downsample_matrix(size: int, factor: int, kernel: str) -> Tensor:
    """The 1-D down-sampling matrix ``[size // factor, size]`` in float64.

    ``box``: average of each block of ``factor`` pixels (rows orthogonal, pinv = nearest
    up-sampling). ``bicubic``: the anti-aliased cubic resampler ILVR's low-pass filter uses
    (Keys a = -0.5 stretched by the factor, as torch's ``interpolate(antialias=True)``).
    """
    if size % factor:
        raise ValueError(f"image size {size} is not divisible by the super-resolution factor {factor}")
    out = size // factor
    if kernel == "box":
        return torch.kron(
            torch.eye(out, dtype=torch.float64), torch.full((1, factor), 1.0 / factor, dtype=torch.float64)
        )
    if kernel == "bicubic":
        return _antialiased_cubic(size, out)
    raise ValueError(f"unknown super-resolution kernel {kernel!r}; choose one of {KERNELS}")


def _cubic(x: Tensor, a: float = -0.5) -> Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (PIL and torch use a = -0.5 when anti-aliasing)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x**2 + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _antialiased_cubic(size: int, out: int) -> Tensor:
    """Rows of PIL's / torch's anti-aliased bicubic resampler (``interpolate(antialias=True)``).

    Output pixel j has centre ``(j + 0.5) * scale`` in input coordinates; the kernel is stretched
    by ``scale = size / out`` and each row is normalised to sum 1.
    """
    scale = size / out
    stretch = max(scale, 1.0)
    centers = (torch.arange(out, dtype=torch.float64) + 0.5) * scale
    pixels = torch.arange(size, dtype=torch.float64) + 0.5
    w = _cubic((pixels[None, :] - centers[:, None]) / stretch)
    return w / w.sum(1, keepdim=True)


class SuperResolution(Operator):
    r"""x ``[B, C, H, W]`` -> y ``[B, C, H/f, W/f]`` by a separable low-pass down-sampler.

    ``kernel="bicubic"`` is ILVR's low-pass filter (anti-aliased bicubic down-sampling); its
    data consistency :math:`x + A^+(y - A x)` replaces exactly the low-pass band
    :math:`\phi = A^+ A` of x with that of the measurement. (ILVR up-samples with a bicubic
    resizer instead of :math:`A^+`, which is neither exactly consistent nor non-expansive.)
    ``kernel="box"`` is the exact orthogonal-projection variant: box averaging, with
    nearest-neighbour up-sampling as pseudo-inverse.

    Example (x2 box on a 2 x 2 image):

    >>> op = SuperResolution(2, kernel="box")
    >>> op(torch.tensor([[[[1., 2.], [3., 4.]]]]))
    tensor([[[[2.5000]]]])
    >>> op.pinv(torch.tensor([[[[2.5]]]]))
    tensor([[[[2.5000, 2.5000],
              [2.5000, 2.5000]]]])
    """

    def __init__(self, factor: int, kernel: str = "bicubic") -> None:
        super().__init__()
        is_number = isinstance(factor, int | float) and not isinstance(factor, bool)
        if not is_number or not factor >= 1 or not float(factor).is_integer():
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        if kernel not in KERNELS:
            raise ValueError(f"unknown super-resolution kernel {kernel!r}; choose one of {KERNELS}")
        self.factor = int(factor)
        self.kernel = kernel
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kernel={self.kernel!r}"

    def _mats(self, size: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(D, D^+) for one axis, cached per size, dtype and device."""
        key = (size, like.dtype, like.device)
        if key not in self._cache:
            d = downsample_matrix(size, self.factor, self.kernel)
            d_pinv = self.factor * d.T if self.kernel == "box" else torch.linalg.pinv(d)
            self._cache[key] = (d.to(like.device, like.dtype), d_pinv.to(like.device, like.dtype))
        return self._cache[key]

    def _check_hr(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"SuperResolution expects [B, C, H, W] images, got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_hr(x)
        dh, _ = self._mats(x.shape[-2], x)
        dw, _ = self._mats(x.shape[-1], x)
        return dh @ x @ dw.T

    def adjoint(self, y: Tensor) -> Tensor:
        self._check_hr(y)
        dh, _ = self._mats(y.shape[-2] * self.factor, y)
        dw, _ = self._mats(y.shape[-1] * self.factor, y)
        return dh.T @ y @ dw

    def pinv(self, y: Tensor) -> Tensor:
        self._check_hr(y)
        _, ph = self._mats(y.shape[-2] * self.factor, y)
        _, pw = self._mats(y.shape[-1] * self.factor, y)
        return ph @ y @ pw.T

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        r"""Closed form :math:`x + A^T (A A^T + \lambda I)^{-1} (y - A x)`, with
        :math:`A A^T = (D_h D_h^T) \otimes (D_w D_w^T)` inverted in the eigenbases of the two small factors."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        if lam == 0:
            return self.project(x, y)
        self._check_hr(x)
        (eh, uh), (ew, uw) = self._gram_eig(x.shape[-2], x), self._gram_eig(x.shape[-1], x)
        r = uh.T @ (y - self(x)) @ uw
        r = r / (eh[:, None] * ew[None, :] + lam)
        return x + self.adjoint(uh @ r @ uw.T)

    def _gram_eig(self, size: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Eigen-decomposition of D D^T for one axis (float64, then cast), cached."""
        key = ("eig", size, like.dtype, like.device)
        if key not in self._cache:
            d = downsample_matrix(size, self.factor, self.kernel)
            evals, evecs = torch.linalg.eigh(d @ d.T)
            self._cache[key] = (evals.to(like.device, like.dtype), evecs.to(like.device, like.dtype))
        return self._cache[key]

    def upsample_bicubic(self, y: Tensor) -> Tensor:
        """Plain bicubic up-sampling of a low-resolution image (the classical SR baseline)."""
        return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False)
