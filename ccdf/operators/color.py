r"""Colorization: the measurement is the luminance y = w . x of an RGB image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ccdf.operators.base import Operator

#: ITU-R BT.601 luma weights (R, G, B): Y' = 0.299 R' + 0.587 G' + 0.114 B' (on gamma-encoded values,
#: as in JPEG, PIL's ``convert("L")`` and deepinv's ``Decolorize(srf="rec601")``, which rounds them).
BT601 = (0.299, 0.587, 0.114)


class Colorization(Operator):
    r"""y ``[B, 1, H, W]`` = :math:`\sum_c w_c x_c` for x ``[B, C, H, W]`` (C = ``len(weights)``).

    A A^T = |w|^2 I, so everything has a closed form: adjoint :math:`w y`; pinv :math:`w y / |w|^2`
    (the minimum-norm image, *not* a gray one: its channels are scaled by w / |w|^2; the gray image
    :math:`y / \sum w` in every channel is another consistent image, :class:`ccdf.initializers.Gray`);
    project :math:`x + w (y - w \cdot x) / |w|^2`; prox :math:`x + w (y - w \cdot x) / (|w|^2 + \lambda)`.
    Since the weights sum to 1, the luminance of an image in [-1, 1] is in [-1, 1] too.

    Args:
        weights: per-channel weights, default ITU-R BT.601 luma (:data:`BT601`).

    Example:

    >>> op = Colorization()
    >>> x = torch.tensor([1.0, 0.0, -1.0]).reshape(1, 3, 1, 1)
    >>> op(x).flatten()
    tensor([0.1850])
    """

    def __init__(self, weights: Sequence[float] = BT601) -> None:
        super().__init__()
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.ndim != 1 or w.numel() == 0 or not bool(torch.isfinite(w).all()) or not float(w.abs().sum()) > 0:
            raise ValueError(f"weights must be a non-empty list of finite numbers, not all 0, got {weights!r}")
        self.register_buffer("weights", w)

    def extra_repr(self) -> str:
        return f"weights={[round(v, 6) for v in self.weights.tolist()]}"

    def _w(self, like: Tensor, channels_from: Tensor, what: str) -> Tensor:
        c = self.weights.numel()
        if channels_from.ndim != 4 or channels_from.shape[1] != (c if what == "image" else 1):
            want = f"[B, {c}, H, W] images" if what == "image" else "[B, 1, H, W] luminance measurements"
            raise ValueError(f"Colorization expects {want}, got shape {tuple(channels_from.shape)}")
        return self.weights.to(like.device, like.real.dtype).reshape(1, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return (self._w(x, x, "image") * x).sum(1, keepdim=True)

    def adjoint(self, y: Tensor) -> Tensor:
        return self._w(y, y, "measurement") * y

    def pinv(self, y: Tensor) -> Tensor:
        w = self._w(y, y, "measurement")
        return w * y / (w * w).sum()

    def project(self, x: Tensor, y: Tensor) -> Tensor:
        w = self._w(x, x, "image")
        return x + w * (y - self(x)) / (w * w).sum()

    def prox(self, x: Tensor, y: Tensor, lam: float) -> Tensor:
        """Closed form x + w (y - A x) / (|w|^2 + lam); ``lam = 0`` is :meth:`project`."""
        if not float(lam) >= 0:
            raise ValueError(f"prox needs lam >= 0, got {lam}")
        w = self._w(x, x, "image")
        return x + w * (y - self(x)) / ((w * w).sum() + lam)

    def measurement_noise(self, n: Tensor) -> Tensor:
        """Every luminance pixel is a measurement (A A^+ = I): white noise stays white."""
        return n
