r"""Deblurring: circular convolution with a blur kernel, by FFT.

Boundary rule: **periodic**. ``A x = k * x`` is the circular convolution of each channel of an
``[H, W]`` image with the kernel, ``(A x)[i, j] = sum_{a, b} k[a, b] x[(i - a + c_h) mod H, (j - b + c_w) mod W]``,
whose origin is the kernel's pixel ``(c_h, c_w) = (kh // 2, kw // 2)`` (its centre for odd sizes; deepinv's
and scipy's ``ndimage.convolve(mode="wrap")`` convention, which DiffPIR uses for its closed-form data step).
A kernel larger than the image is folded onto it modulo ``(H, W)``, which is what periodic convolution means.
In Fourier, A is diagonal: ``F(A x) = K . F(x)`` with ``K = F(k)`` (the kernel placed on the periodic grid).

* ``adjoint``: correlation, ``conj(K)`` in Fourier (exact);
* ``pinv``: the Fourier pseudo-inverse ``1 / K`` where ``|K| > tol * max|K|``, 0 elsewhere;
  ``A^+ A`` is then the orthogonal projection onto the frequencies above the cutoff (the pass band);
* ``project(x, y) = x + A^+(y - A x)``: replaces the pass band of ``x`` by that of ``y / K`` and keeps the rest;
* ``prox(x, y, lam) = F^{-1}((conj(K) Y + lam X) / (|K|^2 + lam))`` (exact, no cutoff).

Why a cutoff: a Gaussian kernel's ``|K|`` falls to 1e-20 and below at high frequencies. ``1 / K`` there would
multiply float32 rounding errors (about 1e-7 of the image) by as much; the cutoff ``tol`` keeps the
amplification below ``1 / tol``. The frequencies below it are treated as unobserved, so ``A(project(x, y))``
equals ``y = A r`` on the pass band and differs from it by ``K (X - R)``, at most ``tol * max|K| * |X - R|``,
elsewhere. The default 1e-4, measured on two bundled faces with DPS's Gaussian: the float32 projection stays
within 4e-4 of the float64 one (RMS 8e-5; 1e-3: 4e-5, 1e-5: 8e-3, 0: 1e11), and the noise-free pseudo-inverse
is 1.1 dB better than with 1e-3. For an exact pseudo-inverse in float64 pass a tiny ``tol`` (the operator
tests use 1e-10).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ccdf.operators.base import Operator

DEFAULT_TOL = 1e-4


def _pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``(kh, kw)`` from a positive integer or a pair of them; anything else raises naming ``name``."""
    pair = [size, size] if not isinstance(size, Sequence) or isinstance(size, str) else list(size)
    ok = len(pair) == 2 and all(
        not isinstance(v, bool) and isinstance(v, int | float) and float(v).is_integer() and v >= 1 for v in pair
    )
    if not ok:
        raise ValueError(f"{name} must be a positive integer or a pair [kh, kw] of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _check_tol(tol: float) -> float:
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < 1:
        raise ValueError(f"tol must be a number in [0, 1), got {tol!r}")
    return float(tol)


def normalize_kernel(kernel: Tensor | np.ndarray, what: str = "kernel") -> Tensor:
    """A float64 kernel ``[kh, kw]`` or ``[B, kh, kw]``, checked (finite, positive sum) and scaled to sum 1."""
    k = torch.as_tensor(kernel).to(torch.float64)
    if k.ndim not in (2, 3) or k.numel() == 0:
        raise ValueError(f"{what} must be a non-empty [kh, kw] or [B, kh, kw] array, got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{what} has non-finite entries (NaN or inf)")
    total = k.sum(dim=(-2, -1), keepdim=True)
    if not bool((total > 0).all()):
        raise ValueError(f"{what} must have a positive sum (it is normalised to sum 1), got {total.flatten().tolist()}")
    return k / total


def gaussian_kernel(sigma: float, size: int | Sequence[int]) -> Tensor:
    r"""The isotropic Gaussian :math:`\exp(-r^2 / 2\sigma^2)` sampled on a ``size`` grid around its
    centre ``((kh - 1) / 2, (kw - 1) / 2)``, normalised to sum 1 (float64 ``[kh, kw]``). DPS and DiffPIR
    use ``sigma = 3``, ``size = 61`` (DPS truncates at 4 sigma, which changes entries of 1e-4 of the peak)."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 < sigma < math.inf:
        raise ValueError(f"sigma must be a positive number (the blur's standard deviation in pixels), got {sigma!r}")
    kh, kw = _pair(size, "size")
    u = torch.arange(kh, dtype=torch.float64) - (kh - 1) / 2
    v = torch.arange(kw, dtype=torch.float64) - (kw - 1) / 2
    k = torch.exp(-(u[:, None] ** 2 + v[None, :] ** 2) / (2 * float(sigma) ** 2))
    return k / k.sum()


class Blur(Operator):
    r"""Periodic blur y = k * x by FFT (see the module docstring for the boundary rule and the cutoff).

    Args:
        kernel: ``[kh, kw]`` shared by the batch, or ``[B, kh, kw]``, one per image (then the images
            must come in batches of B, and :meth:`select` slices it). Normalised to sum 1.
        tol: relative cutoff of the pseudo-inverse: frequencies with ``|K| <= tol * max|K|`` are
            treated as unobserved by ``pinv``/``project``.
        normalize: scale each kernel to sum 1 (False keeps it as given, after the same checks).

    The measurement ``y`` is the blurred image, of the image's size. Real and complex images work.

    Example (3 x 3 image, the kernel [0.5, 0.5] along the rows, periodic):

    >>> op = Blur(torch.tensor([[0.5], [0.5]]))
    >>> op(torch.tensor([[[[0., 0, 0], [0, 4, 0], [0, 0, 0]]]]))[0, 0]
    tensor([[0., 2., 0.],
            [0., 2., 0.],
            [0., 0., 0.]])
    """

    def __init__(self, kernel: Tensor | np.ndarray, tol: float = DEFAULT_TOL, normalize: bool = True) -> None:
        super().__init__()
        k = normalize_kernel(kernel) if normalize else torch.as_tensor(kernel, dtype=torch.float64)
        if not normalize:
            normalize_kernel(k)  # the same checks
        self.shared = k.ndim == 2
        self.register_buffer("kernel", k[None] if self.shared else k)
        self.tol = _check_tol(tol)
        self._cache: dict[tuple, Tensor] = {}

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def gaussian(cls, sigma: float, size: int | Sequence[int] = 61, tol: float = DEFAULT_TOL) -> Blur:
        """Gaussian blur of standard deviation ``sigma`` pixels on a ``size`` kernel (:func:`gaussian_kernel`)."""
        return cls(gaussian_kernel(sigma, size), tol=tol)

    @classmethod
    def uniform(cls, size: int | Sequence[int] = 9, tol: float = DEFAULT_TOL) -> Blur:
        """Uniform (box) blur: the mean over a ``size`` window."""
        kh, kw = _pair(size, "size")
        return cls(torch.ones(kh, kw, dtype=torch.float64), tol=tol)

    @classmethod
    def from_file(cls, path: str | Path, size: int | Sequence[int] | None = None, tol: float = DEFAULT_TOL) -> Blur:
        """A kernel from a ``.npy`` array (2-D) or a one-channel image (PNG, ...), normalised to sum 1.

        ``size`` (optional): the kernel's expected ``[kh, kw]``; a file of another shape is an error.
        Every error names the file (and, from a config, the key ``operator.path``).
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"path: kernel file not found: {path}")
        try:
            if path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
            else:
                from PIL import Image

                with Image.open(path) as img:
                    arr = np.asarray(img)
                if arr.ndim == 3:  # a gray image saved as RGB(A) is fine; colour is not a kernel
                    rgb = arr[..., :3]
                    if not (rgb == rgb[..., :1]).all():
                        raise ValueError(f"is a colour image ({arr.shape[-1]} channels that differ)")
                    arr = rgb[..., 0]
        except (OSError, ValueError) as err:
            raise ValueError(f"path: cannot read the kernel file {path}: {err}") from None
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"path: kernel file {path} holds {arr.dtype} data, not numbers")
        if arr.ndim != 2:
            raise ValueError(f"path: kernel file {path} holds an array of shape {list(arr.shape)}; "
                             "a blur kernel is 2-D [kh, kw]")  # fmt: skip
        if size is not None and tuple(arr.shape) != _pair(size, "size"):
            raise ValueError(f"path: kernel file {path} holds a {arr.shape[0]}x{arr.shape[1]} kernel, "
                             f"but size={list(_pair(size, 'size'))} was asked for")  # fmt: skip
        try:
            kernel = normalize_kernel(arr.astype(np.float64), what=f"the kernel in {path}")
        except ValueError as err:
            raise ValueError(f"path: {err}") from None
        return cls(kernel, tol=tol, normalize=False)

    def extra_repr(self) -> str:
        kind = "shared" if self.shared else f"per image, B={self.kernel.shape[0]}"
        return f"kernel={list(self.kernel.shape[-2:])} ({kind}), tol={self.tol:g}"

    # ------------------------------------------------------------------------------------------ per image
    def select(self, idx: list[int]) -> Blur:
        """The operator of batch items ``idx`` (the same one when the kernel is shared)."""
        if self.shared:
            return self
        sub = Blur(self.kernel[idx], tol=self.tol, normalize=False)
        sub._cache = {key: value[idx] for key, value in self._cache.items()}  # bit-identical spectra
        return sub

    # ------------------------------------------------------------------------------------------ Fourier side
    def _check(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"Blur expects [B, C, H, W] images, got shape {tuple(x.shape)}")
        if not self.shared and x.shape[0] != self.kernel.shape[0]:
            raise ValueError(f"Blur with {self.kernel.shape[0]} per-image kernels expects batches of "
                             f"{self.kernel.shape[0]} images, got shape {tuple(x.shape)}")  # fmt: skip

    def spectrum(self, size: tuple[int, int], device: torch.device | str = "cpu") -> Tensor:
        """``K = F(k)`` on the periodic ``size`` grid: complex128 ``[B or 1, 1, H, W]`` (unnormalised FFT)."""
        h, w = int(size[0]), int(size[1])
        key = (h, w, torch.device(device))
        if key not in self._cache:
            k = self.kernel.detach().to("cpu", torch.float64)
            kh, kw = k.shape[-2:]
            rows = (torch.arange(kh) - kh // 2) % h
            cols = (torch.arange(kw) - kw // 2) % w
            flat = (rows[:, None] * w + cols[None, :]).reshape(-1)
            grid = torch.zeros(k.shape[0], h * w, dtype=torch.float64)
            grid.index_add_(1, flat, k.reshape(k.shape[0], -1))  # folds a kernel larger than the image
            spec = torch.fft.fft2(grid.reshape(k.shape[0], 1, h, w))
            self._cache[key] = spec.to(device)
        return self._cache[key]

    def _multiply(self, x: Tensor, which: str, lam: float = 0.0, y: Tensor | None = None) -> Tensor:
        """``F^{-1}(M . F(x))`` for the multiplier ``which`` (real images use the half spectrum)."""
        self._check(x)
        h, w = x.shape[-2:]
        spec = self.spectrum((h, w), x.device)
        real = not torch.is_complex(x) and (y is None or not torch.is_complex(y))
        if real:
            spec = spec[..., : w // 2 + 1]
            fwd, inv = torch.fft.rfft2, lambda z: torch.fft.irfft2(z, s=(h, w))
        else:
            fwd, inv = torch.fft.fft2, torch.fft.ifft2
        cdtype = torch.complex128 if x.real.dtype == torch.float64 else torch.complex64
        X = fwd(x)
        if which == "forward":
            out = spec.to(cdtype) * X
        elif which == "adjoint":
            out = spec.conj().to(cdtype) * X
        elif which == "pinv":
            out = self._inverse(spec).to(cdtype) * X
        elif which == "project":  # X + K^+ (Y - K X)
            out = X + self._inverse(spec).to(cdtype) * (fwd(y) - spec.to(cdtype) * X)
        else:  # prox: (conj(K) Y + lam X) / (|K|^2 + lam)
            k = spec.to(cdtype)
            out = (k.conj() * fwd(y) + lam * X) / (k.abs() ** 2 + lam)
        return inv(out)

    def _inverse(self, spec: Tensor) -> Tensor:
        """``1 / K`` above the cutoff ``tol * max|K|`` (per kernel), 0 below it (float64 arithmetic)."""
        mag = spec.abs()
        keep = mag > self.tol * mag.flatten(1).amax(1).reshape(-1, 1, 1, 1)
        return torch.where(keep, 1 / torch.where(keep, spec, torch.ones_like(spec)), torch.zeros_like(spec))

    # ------------------------------------------------------------------------------------------ the contract
    def forward(self, x: Tensor) -> Tensor:
        return self._multiply(x, "forward")

    def adjoint(self, y: Tensor) -> Tensor:
        return self._multiply(y, "adjoint")

    def pinv(self, y: Tensor) -> Tensor:
        return self._multiply(y, "pinv")

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        return self._multiply(x, "project", y=y)

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        r"""Closed form in Fourier: :math:`(\bar K Y + \lambda X) / (|K|^2 + \lambda)` (no cutoff);
        ``lam = 0`` is :meth:`project`."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        if lam == 0:
            return self.project(x, y)
        return self._multiply(x, "prox", lam=float(lam), y=y)

    def measurement_noise(self, n: Tensor) -> Tensor:
        """Every pixel of the blurred image is a measurement: white noise stays white (DPS, DiffPIR)."""
        return n


# ---------------------------------------------------------------------------------------------- motion blur
def _uniform(g: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=g, dtype=torch.float64))


def _beta_1(g: torch.Generator, b: float) -> float:
    """Beta(1, b) by inversion: 1 - U^(1/b)."""
    return 1.0 - _uniform(g) ** (1.0 / b)


def _beta_int(g: torch.Generator, a: int, b: int) -> float:
    """Beta(a, b) for integer a, b: G_a / (G_a + G_b) with G_n a sum of n unit exponentials."""
    e = -torch.log1p(-torch.rand(a + b, generator=g, dtype=torch.float64))
    return float(e[:a].sum() / e.sum())


def _triangular(g: torch.Generator, low: float, mode: float, high: float) -> float:
    """The triangular law on [low, high] with the given mode, by inversion."""
    u, width = _uniform(g), high - low
    c = (mode - low) / width
    return low + math.sqrt(u * width * (mode - low)) if u < c else high - math.sqrt((1 - u) * width * (high - mode))


def motion_trajectory(size: tuple[int, int], intensity: float, g: torch.Generator) -> Tensor:
    r"""The random camera path of DPS / DiffPIR's motion-blur kernels (the ``motionblur`` package's
    ``Kernel``, re-implemented here with an explicit generator), as complex points ``x + i y`` in kernel
    pixels relative to the kernel's centre. With ``D`` the kernel's diagonal and ``I`` the intensity:

    * path length ``L = 0.75 D (U(0, 1) + U(0, I^2))``, cut into steps of ``Beta(1, 30) (1 - I + 0.1) D``
      (steps longer than ``L`` are redrawn) until their sum reaches ``L``;
    * angles: ``a_max ~ U(0, I pi)``, a sign-change probability ``j ~ Beta(2, 20)``, the first angle
      ``U(-a_max, a_max)``, the others ``Triangular(0, I a_max, a_max + 0.1)`` in absolute value with the
      previous one's sign, changed with probability ``j``;
    * the path is the cumulative sum of the steps, centred on its centre of mass and rotated by ``U(0, pi)``.
    """
    diag = math.hypot(*size)
    length = 0.75 * diag * (_uniform(g) + _uniform(g, 0.0, intensity**2))
    steps: list[float] = []
    while sum(steps) < length:
        step = _beta_1(g, 30.0) * (1 - intensity + 0.1) * diag
        if step < length:
            steps.append(step)
    if not steps:  # length 0 (probability 0): a still camera
        return torch.zeros(1, dtype=torch.complex128)
    a_max = _uniform(g, 0.0, intensity * math.pi)
    jitter = _beta_int(g, 2, 20)
    angles = [_uniform(g, -a_max, a_max)]
    while len(angles) < len(steps):
        angle = _triangular(g, 0.0, intensity * a_max, a_max + 0.1)
        sign = math.copysign(1.0, angles[-1]) if angles[-1] != 0 else 0.0
        angles.append(angle * (-sign if _uniform(g) < jitter else sign))
    z = torch.polar(torch.tensor(steps, dtype=torch.float64), torch.tensor(angles, dtype=torch.float64))
    path = torch.cumsum(z, 0)
    path = path - path.mean()
    rotation = torch.tensor(_uniform(g, 0.0, math.pi), dtype=torch.float64)
    return path * torch.polar(torch.ones((), dtype=torch.float64), rotation)


def render_trajectory(path: Tensor, size: tuple[int, int], smooth: float) -> Tensor:
    """Draw a polyline (complex points, relative to the kernel's centre) as a kernel ``[kh, kw]``: points
    0.1 px apart, each carrying its share of the length, splatted bilinearly, then a Gaussian of std
    ``smooth`` px (the reference draws a thin line and blurs it); what falls outside is cut, sum 1."""
    kh, kw = size
    if path.numel() == 1:
        pts, weights = path, torch.ones(1, dtype=torch.float64)
    else:
        a, b = path[:-1], path[1:]
        seg = (b - a).abs()
        counts = torch.clamp(torch.ceil(seg / 0.1), min=1).long()
        which = torch.repeat_interleave(torch.arange(seg.numel()), counts)
        start = torch.cumsum(counts, 0) - counts
        frac = (torch.arange(int(counts.sum())) - start[which] + 0.5) / counts[which]
        pts = a[which] + frac * (b - a)[which]
        weights = (seg / counts)[which]
    rows, cols = pts.imag + kh // 2, pts.real + kw // 2  # x = column, y = row (image convention)
    grid = torch.zeros((kh + 2) * (kw + 2), dtype=torch.float64)  # one pixel of margin for the splat
    r0, c0 = torch.floor(rows), torch.floor(cols)
    for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
        r, c = r0 + dr, c0 + dc
        wgt = weights * (1 - (rows - r).abs()) * (1 - (cols - c).abs())
        inside = (r >= -1) & (r <= kh) & (c >= -1) & (c <= kw)
        flat = ((r[inside] + 1) * (kw + 2) + (c[inside] + 1)).long()
        grid.index_add_(0, flat, wgt[inside])
    k = grid.reshape(kh + 2, kw + 2)[1:-1, 1:-1]
    radius = max(1, math.ceil(3 * smooth))
    u = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g1 = torch.exp(-0.5 * (u / smooth) ** 2)
    g1 = (g1 / g1.sum()).reshape(1, 1, -1)
    k = torch.nn.functional.conv1d(k[:, None, :], g1, padding=radius)[:, 0, :]  # along the rows
    k = torch.nn.functional.conv1d(k.T[:, None, :], g1, padding=radius)[:, 0, :].T  # along the columns
    if not float(k.sum()) > 0:  # the whole path outside the kernel (practically never): no blur
        k = torch.zeros(kh, kw, dtype=torch.float64)
        k[kh // 2, kw // 2] = 1
    return k / k.sum()


def motion_kernel(size: int | Sequence[int], intensity: float, generator: torch.Generator) -> Tensor:
    """One random motion-blur kernel ``[kh, kw]`` (float64, sum 1) drawn from ``generator``
    (:func:`motion_trajectory`, rendered by :func:`render_trajectory`). The reference draws a 1 px line on a
    twice-size canvas, blurs it with a Gaussian of std ``floor(0.01 D2)`` px (``D2``: that canvas's
    diagonal) and halves it; the smoothing here is 0.9 of that std in kernel pixels (the bilinear splat adds
    the rest), which gives the reference's kernel spread and effective area (tests/test_blur.py)."""
    kh, kw = _pair(size, "size")
    path = motion_trajectory((kh, kw), float(intensity), generator)
    return render_trajectory(path, (kh, kw), smooth=0.45 * max(1, math.floor(0.01 * 2 * math.hypot(kh, kw))))


class MotionBlur(Operator):
    """Random motion blur, one kernel per image (DPS's and DiffPIR's ``motion_blur`` task: 61 x 61, 0.5).

    This operator only draws: :meth:`for_batch` returns a :class:`Blur` with one kernel per image,
    drawn from each image's own generator (its first draws, so an image's kernel does not depend on its
    batch, its device or the run's other images). It cannot be applied before that.

    Args:
        size: kernel size (int or ``[kh, kw]``).
        intensity: in [0, 1]; 0 is a straight path, 1 a long, strongly curved one.
        tol: the pseudo-inverse cutoff of the :class:`Blur` it returns.
    """

    def __init__(self, size: int | Sequence[int] = 61, intensity: float = 0.5, tol: float = DEFAULT_TOL) -> None:
        super().__init__()
        self.size = _pair(size, "size")
        if isinstance(intensity, bool) or not isinstance(intensity, int | float) or not 0 <= intensity <= 1:
            raise ValueError(f"intensity must be a number in [0, 1], got {intensity!r}")
        self.intensity = float(intensity)
        self.tol = _check_tol(tol)

    def extra_repr(self) -> str:
        return f"size={list(self.size)}, intensity={self.intensity:g}, tol={self.tol:g}"

    def draw(self, generator: torch.Generator) -> Tensor:
        """One kernel ``[kh, kw]`` from ``generator`` (:func:`motion_kernel`)."""
        return motion_kernel(self.size, self.intensity, generator)

    def for_batch(self, batch: dict, generators: Sequence[torch.Generator]) -> Blur:
        """A :class:`Blur` with the kernels ``[B, kh, kw]`` of the batch's images, one from each generator."""
        if isinstance(generators, torch.Generator) or generators is None:
            raise ValueError(
                "MotionBlur.for_batch needs one generator per image (ccdf.utils.rng.per_sample_generators)"
            )
        return Blur(torch.stack([self.draw(g) for g in generators]), tol=self.tol, normalize=False)

    def _refuse(self, *args: object) -> Tensor:
        raise RuntimeError(
            "MotionBlur draws one kernel per image: call op.for_batch(batch, generators) for the batch's "
            "operator (the evaluation loop does), or build Blur(op.draw(generator)) yourself"
        )

    forward = adjoint = pinv = project = _refuse

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        return self._refuse()
