r"""Exact MMSE denoisers for Gaussian priors: no weights, closed forms.

For a prior x0 ~ N(mu, Sigma) and x_t = a x0 + s eps (a = alpha(t), s = sigma(t)),
the posterior mean is (Tweedie's formula, which is exact and linear here)

.. math:: \hat x_0 = \mu + a \Sigma (a^2 \Sigma + s^2 I)^{-1} (x_t - a \mu).

Two priors: :class:`DenseGaussianPrior` (any Sigma, small n; tests and theory) and
:class:`StationaryGaussianPrior` (diagonal in colour-decorrelated Fourier space, fitted to a
data set, any resolution and channel count; the embedded default model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ccdf.denoisers.base import apply_real_imag
from ccdf.schedules.base import Schedule
from ccdf.utils.rng import Generator, randn


class DenseGaussianPrior(nn.Module):
    r"""N(mean, cov) on images of a fixed ``shape`` with ``n = prod(shape)`` pixels.

    Args:
        mean: ``[n]`` or ``shape``.
        cov: ``[n, n]`` symmetric positive semi-definite.
        shape: the image shape ``(C, H, W)`` (or any shape with ``n`` entries).
    """

    def __init__(self, mean: Tensor, cov: Tensor, shape: Sequence[int]) -> None:
        super().__init__()
        n = math.prod(shape)
        mean = torch.as_tensor(mean).reshape(-1)
        cov = torch.as_tensor(cov)
        if mean.shape != (n,) or cov.shape != (n, n):
            raise ValueError(f"mean/cov shapes {tuple(mean.shape)}/{tuple(cov.shape)} do not fit shape {tuple(shape)}")
        if not torch.allclose(cov, cov.mT, atol=1e-10 * float(cov.abs().max())):
            raise ValueError("cov must be symmetric")
        evals, evecs = torch.linalg.eigh(cov.to(torch.float64))
        if float(evals.min()) < -1e-8 * float(evals.max()):
            raise ValueError(f"cov must be positive semi-definite (min eigenvalue {float(evals.min()):.3g})")
        self.shape = tuple(shape)
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("cov", cov.to(torch.float64))
        self.register_buffer("evals", evals.clamp(min=0))
        self.register_buffer("evecs", evecs)

    def denoise(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """Posterior mean E[x0 | a x0 + s eps = x] for ``x`` ``[B, *shape]``, ``a, s`` ``[B]``."""
        return apply_real_imag(lambda v: self._denoise_real(v, a, s), x)

    def _denoise_real(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        a = torch.as_tensor(a, dtype=torch.float64).reshape(-1, 1)
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1, 1)
        lam = self.evals[None]
        gain = a * lam / (a**2 * lam + s**2)  # [B, n], eigen-basis Wiener gain
        coef = (flat - a * self.mean) @ self.evecs
        out = self.mean + (gain * coef) @ self.evecs.mT
        return out.to(x.dtype).reshape(x.shape)

    def sample(self, num: int, generator: Generator = None, dtype: torch.dtype = torch.float64) -> Tensor:
        """``num`` draws from the prior, ``[num, *shape]``."""
        z = randn((num, self.mean.shape[0]), generator=generator, dtype=torch.float64, device=self.mean.device)
        x = self.mean + (z * self.evals.sqrt()) @ self.evecs.mT
        return x.to(dtype).reshape(num, *self.shape)

    def posterior(self, a_mat: Tensor, y: Tensor, noise_var: float = 0.0) -> tuple[Tensor, Tensor]:
        r"""Exact posterior of x given y = A x + N(0, noise_var I): mean ``[B, n]``, covariance ``[n, n]``.

        Uses the pseudo-inverse of :math:`A \Sigma A^T + \sigma_y^2 I`, so a rank-deficient A
        (e.g. a mask written as an n x n matrix) is fine when noise_var = 0.
        """
        a_mat = a_mat.to(torch.float64)
        y = y.reshape(y.shape[0], -1).to(torch.float64)
        s_at = self.cov @ a_mat.mT
        gram = a_mat @ s_at + noise_var * torch.eye(a_mat.shape[0], dtype=torch.float64)
        gain = s_at @ torch.linalg.pinv(gram, hermitian=True)
        mean = self.mean + (y - self.mean @ a_mat.mT) @ gain.mT
        cov = self.cov - gain @ s_at.mT
        return mean, 0.5 * (cov + cov.mT)


class StationaryGaussianPrior(nn.Module):
    r"""Stationary Gaussian field per decorrelated colour channel, with a radial power spectrum.

    x = mean + V f, with V the eigenvectors of the colour covariance and f_c independent
    zero-mean stationary fields whose orthonormal-FFT coefficients have variance
    ``P_c(|freq|)``. The covariance is diagonal in (colour-eigenbasis, Fourier) coordinates, so
    the MMSE denoiser is an exact per-frequency Wiener gain at any image size H x W: the
    spectrum is a table over normalised radial frequency (cycles / pixel, 0 to 1/sqrt(2)),
    interpolated log-linearly.

    Args:
        mean: ``[C]`` channel means (model range).
        color_basis: ``[C, C]`` orthogonal matrix V.
        radii: ``[K]`` increasing radial frequencies of the table (``radii[0] = 0`` is DC).
        log_power: ``[C, K]`` log of the spectrum at ``radii`` (orthonormal FFT convention:
            the per-pixel variance of channel c is the mean of ``P_c`` over the frequency grid).
    """

    def __init__(self, mean: Tensor, color_basis: Tensor, radii: Tensor, log_power: Tensor) -> None:
        super().__init__()
        c = int(mean.shape[0])
        if color_basis.shape != (c, c) or log_power.shape[0] != c or log_power.shape[1] != radii.shape[0]:
            raise ValueError("mean [C], color_basis [C, C], radii [K] and log_power [C, K] do not agree")
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("color_basis", torch.as_tensor(color_basis, dtype=torch.float64))
        self.register_buffer("radii", torch.as_tensor(radii, dtype=torch.float64))
        self.register_buffer("log_power", torch.as_tensor(log_power, dtype=torch.float64))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def power(self, height: int, width: int) -> Tensor:
        """The spectrum on the ``fft2`` grid of an ``height x width`` image: ``[C, H, W]``."""
        fy = torch.fft.fftfreq(height, dtype=torch.float64)
        fx = torch.fft.fftfreq(width, dtype=torch.float64)
        r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).to(self.radii.device)
        r = r.clamp(max=float(self.radii[-1]))
        idx = torch.searchsorted(self.radii, r.reshape(-1)).clamp(1, self.radii.shape[0] - 1)
        r0, r1 = self.radii[idx - 1], self.radii[idx]
        w = ((r.reshape(-1) - r0) / (r1 - r0)).clamp(0, 1)
        logp = (1 - w) * self.log_power[:, idx - 1] + w * self.log_power[:, idx]
        return logp.exp().reshape(self.channels, height, width)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected images [B, {self.channels}, H, W], got {tuple(x.shape)}")

    def apply_gain(self, x: Tensor, gain: Tensor) -> Tensor:
        """Multiply the decorrelated Fourier coefficients of real ``x`` by ``gain`` ``[B|1, C, H, W]``."""
        v = self.color_basis.to(x.device)
        z = torch.einsum("dc,bdhw->bchw", v, x.to(torch.float64))  # V^T x
        z = torch.fft.ifft2(torch.fft.fft2(z, norm="ortho") * gain, norm="ortho").real
        return torch.einsum("cd,bdhw->bchw", v, z)  # V z

    def denoise(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """Exact posterior mean E[x0 | a x0 + s eps = x], ``x`` ``[B, C, H, W]``, ``a, s`` ``[B]``."""
        self._check(x)
        return apply_real_imag(lambda v: self._denoise_real(v, a, s), x)

    def _denoise_real(self, x: Tensor, a: Tensor, s: Tensor) -> Tensor:
        p = self.power(x.shape[-2], x.shape[-1])[None]
        a = torch.as_tensor(a, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
        s = torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
        mean = self.mean.to(x.device).reshape(1, -1, 1, 1)
        gain = a * p / (a**2 * p + s**2)
        return (mean + self.apply_gain(x.to(torch.float64) - a * mean, gain)).to(x.dtype)

    def sample(
        self, num: int, height: int, width: int, generator: Generator = None, dtype: torch.dtype = torch.float64
    ) -> Tensor:
        """``num`` draws from the prior at size ``height x width``: ``[num, C, H, W]``."""
        w = randn(
            (num, self.channels, height, width), generator=generator, dtype=torch.float64, device=self.mean.device
        )
        x = self.mean.reshape(1, -1, 1, 1) + self.apply_gain(
            torch.einsum("cd,bdhw->bchw", self.color_basis, w), self.power(height, width).sqrt()[None]
        )
        return x.to(dtype)

    def pixel_variance(self, height: int, width: int) -> Tensor:
        """Per-channel pixel variance in the decorrelated basis, ``[C]``."""
        return self.power(height, width).mean(dim=(-2, -1))

    @classmethod
    def fit(cls, images: Tensor, num_bins: int | None = None) -> StationaryGaussianPrior:
        """Fit mean, colour basis and radial spectrum to real images ``[M, C, H, W]`` (model range).

        The spectrum is the mean periodogram ``|fft2(x - mean, norm='ortho')|^2`` over images,
        averaged over rings of width ``1 / max(H, W)`` (tabulated at each ring's mean radius) and
        rescaled so that the pixel variance at the fitting size equals the data's.
        """
        if images.ndim != 4 or images.shape[0] < 1 or torch.is_complex(images):
            raise ValueError(f"fit needs real images [M, C, H, W], got {tuple(images.shape)} {images.dtype}")
        x = images.to(torch.float64)
        m, c, h, w = x.shape
        mean = x.mean(dim=(0, 2, 3))
        centered = x - mean.reshape(1, -1, 1, 1)
        flat = centered.permute(1, 0, 2, 3).reshape(c, -1)
        color_cov = flat @ flat.mT / flat.shape[1]
        _, basis = torch.linalg.eigh(color_cov)
        z = torch.einsum("dc,bdhw->bchw", basis, centered)
        per = torch.fft.fft2(z, norm="ortho").abs().pow(2).mean(0)  # [C, H, W]
        fy = torch.fft.fftfreq(h, dtype=torch.float64)
        fx = torch.fft.fftfreq(w, dtype=torch.float64)
        r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        size = max(h, w)
        ring = torch.round(r * size).long()
        num_rings = int(ring.max()) + 1
        counts = torch.bincount(ring.reshape(-1), minlength=num_rings).to(torch.float64)
        power = torch.stack(
            [torch.bincount(ring.reshape(-1), weights=per[k].reshape(-1), minlength=num_rings) for k in range(c)]
        )
        keep = counts > 0
        radius_sum = torch.bincount(ring.reshape(-1), weights=r.reshape(-1), minlength=num_rings)
        radii = radius_sum[keep] / counts[keep]  # mean radius of each ring's members
        power = (power[:, keep] / counts[keep]).clamp(min=1e-12)
        # Extend the table to the corner frequency so every grid point is covered.
        corner = math.sqrt(0.5)
        if float(radii[-1]) < corner:
            radii = torch.cat([radii, torch.tensor([corner], dtype=torch.float64)])
            power = torch.cat([power, power[:, -1:]], dim=1)
        # Interpolating ring means is not exactly variance-preserving on the grid; rescale each
        # channel so the model's pixel variance at the fitting size equals the data's (Parseval).
        prior = cls(mean, basis, radii, power.log())
        scale = per.mean(dim=(-2, -1)) / prior.pixel_variance(h, w)
        power = power * scale[:, None]
        return cls(mean, basis, radii, power.log())


class GaussianDenoiser(nn.Module):
    """Denoiser adapter for a Gaussian prior and a schedule: D(x_t, t) = E[x0 | x_t] exactly."""

    def __init__(self, prior: DenseGaussianPrior | StationaryGaussianPrior, schedule: Schedule) -> None:
        super().__init__()
        self.prior = prior
        self.schedule = schedule

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(x_t.shape[0])
        if bool((t == t[0]).all()):  # the usual case: one time for the whole batch
            t = t[:1]
        a = self.schedule.alpha(t).expand(x_t.shape[0])
        s = self.schedule.sigma(t).expand(x_t.shape[0])
        return self.prior.denoise(x_t, a, s)


def fit_stationary_prior(data, max_images: int | None = 64) -> StationaryGaussianPrior:
    """Fit a :class:`StationaryGaussianPrior` to a data set's images (``x0`` items).

    Complex items (MRI) are fitted on their magnitude, the way score-MRI trains on magnitude
    images and then applies the model to Re and Im separately.
    """
    n = len(data) if max_images is None else min(len(data), max_images)
    if n == 0:
        raise ValueError("cannot fit a prior to an empty data set")
    images = torch.stack([data[i]["x0"] for i in range(n)])
    if torch.is_complex(images):
        images = images.abs()
    return StationaryGaussianPrior.fit(images)
