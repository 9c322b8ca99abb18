"""The ``Schedule`` protocol: the forward process x_t = alpha(t) x0 + sigma(t) eps, t in [0, 1]."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ccdf.utils.rng import Generator, randn_like
from ccdf.utils.tensor import bcast, bcast_key


@runtime_checkable
class Schedule(Protocol):
    """Forward process ``x_t = alpha(t) * x0 + sigma(t) * eps`` with ``t`` in ``[0, 1]`` (0 = data).

    ``alpha`` and ``sigma`` take a float or a ``[B]`` tensor and return float64 tensors of the
    same shape (score_sde's ``marginal_prob`` as two named functions; EDM's s(t), sigma(t)).
    """

    kind: str  # "vp" or "ve"

    def alpha(self, t: Tensor | float) -> Tensor: ...

    def sigma(self, t: Tensor | float) -> Tensor: ...

    def timesteps(self, num_steps: int, t_start: float = 1.0) -> Tensor:
        """Decreasing float64 grid from ~t_start to 0 with ``round(t_start * num_steps) + 1`` entries."""
        ...


def as_time(t: Tensor | float) -> Tensor:
    """A float64 tensor view of a time (scalar or ``[B]``)."""
    return torch.as_tensor(t, dtype=torch.float64)


class TimeMemo:
    """A schedule's values at the few host times a sampling loop asks for again and again (the grid's).

    ``memo(name, t, fn)`` returns ``fn(t)`` and keeps it for a later call with the same name, shape and
    values of ``t``, so a loop's schedule look-ups cost a dict access instead of a dozen tensor ops
    (the same bits: the value is the one ``fn`` computed). Only small CPU tensors (a scalar time or one
    per item) are kept; callers must not modify the returned tensor in place.
    """

    max_numel, max_entries = 256, 8192

    def __init__(self) -> None:
        self._values: dict[tuple, Tensor] = {}

    def __call__(self, name: str, t: Tensor | float, fn) -> Tensor:
        t = as_time(t)
        key = self._key(t)
        return fn(t) if key is None else self._get((name, key), fn, t)

    def many(self, name, times: tuple[Tensor | float, ...], fn):
        """``fn(*times)`` kept for a later call with the same ``name`` (any hashable: say a tuple of the
        settings and the dtype the value depends on) and the same times: a step's coefficients, computed
        once per pair of grid times instead of once per step."""
        ts, keys = [], []
        for t in times:  # a plain loop: this runs several times per network evaluation
            t = as_time(t)
            key = self._key(t)
            if key is None:
                return fn(*ts, t, *(as_time(u) for u in times[len(ts) + 1 :]))
            ts.append(t)
            keys.append(key)
        return self._get((name, tuple(keys)), fn, *ts)

    def _key(self, t: Tensor) -> tuple | float | None:
        if not t.is_cpu or t.requires_grad:
            return None
        if t.ndim == 0:  # a grid time: its value is the key (1-d times get a tuple that starts with the shape)
            return t.item()
        return (tuple(t.shape), *t.reshape(-1).tolist()) if t.numel() <= self.max_numel else None

    def _get(self, key: tuple, fn, *ts: Tensor):
        value = self._values.get(key)
        if value is None:
            if len(self._values) >= self.max_entries:
                self._values.clear()
            value = self._values[key] = fn(*ts)
        return value


def memoized(schedule: Schedule, name, times: tuple[Tensor | float, ...], fn):
    """``fn(*times)`` through the schedule's :class:`TimeMemo` when it has one (``fn`` as it is otherwise):
    per-step coefficients of the solvers and data steps, computed once per grid time. The value must not
    depend on anything but the times and ``name``, and callers must not modify it in place."""
    memo = getattr(schedule, "_memo", None)
    return fn(*(as_time(t) for t in times)) if memo is None else memo.many(name, times, fn)


def uniform_timesteps(num_steps: int, t_start: float = 1.0) -> Tensor:
    """``k / num_steps`` for ``k = K, ..., 0`` with ``K = round(t_start * num_steps)``.

    >>> uniform_timesteps(10, 0.3).tolist()
    [0.3, 0.2, 0.1, 0.0]
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    k = num_steps_from_t0(t_start, num_steps)
    return torch.arange(k, -1, -1, dtype=torch.float64) / num_steps


def num_steps_from_t0(t0: float, num_steps: int) -> int:
    """CCDF's N' = round(t0 * N), after checking that t0 lies in (0, 1].

    >>> num_steps_from_t0(0.1, 1000)
    100
    """
    if not 0.0 < float(t0) <= 1.0:
        raise ValueError(f"t0 must be in (0, 1], got {t0}")
    k = int(round(float(t0) * num_steps))
    if k < 1:
        raise ValueError(f"t0={t0} gives round(t0 * num_steps) = 0 reverse steps with num_steps={num_steps}")
    return k


def forward_diffuse(schedule: Schedule, x0: Tensor, t: Tensor | float, generator: Generator = None) -> Tensor:
    """Sample q(x_t | x0) = N(alpha(t) x0, sigma(t)^2 I): CCDF's forward jump from x_init to t0.

    Args:
        schedule: the forward process.
        x0: clean images ``[B, C, H, W]`` (real or complex).
        t: a time in ``[0, 1]``, scalar or ``[B]``.
        generator: see :mod:`ccdf.utils.rng`.

    Returns:
        ``x_t``, same shape and dtype as ``x0``.
    """
    eps = randn_like(x0, generator)
    a, s = memoized(schedule, ("diffuse", *bcast_key(x0)), (t,),
                    lambda t: (bcast(schedule.alpha(t), x0), bcast(schedule.sigma(t), x0)))  # fmt: skip
    return (a * x0).add_(eps.mul_(s))  # a x0 + s eps (eps is this call's own draw)
