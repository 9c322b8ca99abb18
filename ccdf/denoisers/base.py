"""The single interface samplers see: a denoiser D(x_t, t) -> x0_hat (EDM, k-diffusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@dataclass
class DenoiserOutput:
    """A denoiser's answer when it says more than x0_hat.

    Attributes:
        x0_hat: the estimate of the clean image, same shape as ``x_t``.
        var_frac: IDDPM's learned-range interpolation ``(v + 1) / 2`` in ``[0, 1]`` per pixel
            (log variance = frac * log beta + (1 - frac) * log beta_tilde), or ``None``.
    """

    x0_hat: Tensor
    var_frac: Tensor | None = None


@runtime_checkable
class Denoiser(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor | DenoiserOutput:
        """Return x0_hat (or a :class:`DenoiserOutput`) for ``x_t`` ``[B, ...]`` at times ``t`` ``[B]``."""
        ...


def as_output(out: Tensor | DenoiserOutput) -> DenoiserOutput:
    return out if isinstance(out, DenoiserOutput) else DenoiserOutput(out)


class CountingDenoiser(nn.Module):
    """Counts network evaluations (NFE): calls, items over all calls, and per batch item.

    The per-item count (``per_item``) is kept when the solver says which items of the batch each
    call evaluates (:meth:`set_items`, called by the solver loop before every step); it is the
    NFE each item's result cost, whatever the batch and the other items' start times.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.inner = denoiser
        self.calls = 0
        self.items = 0
        self.per_item: list[int] = []
        self._members: list[int] | None = None

    def set_items(self, members: list[int], batch: int) -> None:
        """The batch items (of ``batch``) that the next calls evaluate, in order."""
        if len(self.per_item) != batch:
            self.per_item = [0] * batch
        self._members = list(members)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor | DenoiserOutput:
        self.calls += 1
        self.items += int(x_t.shape[0])
        if self._members is not None:
            if len(self._members) != x_t.shape[0]:
                raise RuntimeError(
                    f"denoiser called on {x_t.shape[0]} items, the solver announced {len(self._members)}"
                )
            for b in self._members:
                self.per_item[b] += 1
        return self.inner(x_t, t)

    def reset(self) -> None:
        self.calls = self.items = 0
        self.per_item, self._members = [], None


class PerItemDenoiser(nn.Module):
    """Evaluates a denoiser on one batch item at a time, so that an item's ``x0_hat`` is the same
    bits whatever batch it came in.

    A network evaluated on a batch of B may take other kernels or summation orders than on a batch
    of 1 (convolution algorithms, matmul blocking), which changes float32 rounding (in the 7th-8th
    digit) with the batch size. Evaluated item by item, each call sees the same ``[1, ...]`` shapes.
    The number of evaluations per item (NFE) is unchanged.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        self.inner = denoiser

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor | DenoiserOutput:
        outs = [self.inner(x_t[b : b + 1], t[b : b + 1] if t.ndim else t) for b in range(x_t.shape[0])]
        if all(isinstance(o, Tensor) for o in outs):
            return torch.cat(outs)
        outs = [as_output(o) for o in outs]
        has_var = [o.var_frac is not None for o in outs]
        var_frac = torch.cat([o.var_frac for o in outs]) if all(has_var) else None
        return DenoiserOutput(torch.cat([o.x0_hat for o in outs]), var_frac)


def apply_real_imag(fn, x: Tensor) -> Tensor:
    """Apply a real-valued map to Re(x) and Im(x) separately, as score-MRI does for complex data."""
    if not torch.is_complex(x):
        return fn(x)
    return torch.complex(fn(x.real), fn(x.imag))
