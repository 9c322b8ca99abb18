r"""The solver interface: a solver owns its loop over a time grid (k-diffusion / EDM style).

A solver is called with the denoiser, the state ``x`` (every item already at its own start
level), the common decreasing time grid, each item's start index on that grid, the
measurement :class:`~ccdf.sampling.conditioning.Problem`, a
:class:`~ccdf.sampling.conditioning.Conditioning`, the generators and a callback. Item ``b``
takes the steps ``start[b], ..., K - 1`` of the grid; items that have not started yet are left
alone, so one batched pass serves items with different start times (CCDF's per-item t0).

Every per-step decision (which items are active) is made on the host before the pass
(:func:`active_sets`). A multistep solver keeps per-item history (:class:`History`): an item
that has just joined has none, and takes the solver's first-order start, exactly as if it had
run alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ccdf.denoisers.base import Denoiser, DenoiserOutput, as_output
from ccdf.sampling.conditioning import Conditioning, Problem, grad_enabled
from ccdf.schedules.base import Schedule
from ccdf.utils.rng import Generator, select_generators


@dataclass
class StepInfo:
    """What a callback sees after each step (``x`` and ``x0_hat`` of the active items ``idx``)."""

    i: int
    t: float
    x: Tensor
    x0_hat: Tensor
    active: Tensor


@dataclass
class Step:
    """One step of the grid for the active items: times, sub-problem and generators."""

    i: int
    t: Tensor  # scalar float64
    s: Tensor  # scalar float64, the next grid time
    idx: list[int] | None  # active item indices, None = all items
    problem: Problem
    generator: Generator
    first: list[bool] = field(default_factory=list)  # per active item: its first step (no history yet)
    x0_clip: float | None = None
    t_prev: Tensor | None = None  # the previous grid time (None on the grid's first step)


def active_sets(start: Sequence[int], num_levels: int) -> list[list[int] | None]:
    """Per grid step i, the items with ``start[b] <= i`` (None when that is every item), on the host."""
    start = [int(v) for v in start]
    out: list[list[int] | None] = []
    for i in range(num_levels):
        idx = [b for b, k in enumerate(start) if k <= i]
        out.append(None if len(idx) == len(start) else idx)
    return out


class DeviceIndex:
    """The active item lists as index tensors on the state's device, made once per list (a list used to index
    a device tensor would be copied to the device, blocking, at every step)."""

    def __init__(self) -> None:
        self._index: dict[tuple[torch.device, tuple[int, ...]], Tensor] = {}

    def __call__(self, idx: list[int], device: torch.device) -> Tensor:
        key = (device, tuple(idx))
        if key not in self._index:
            self._index[key] = torch.tensor(idx, dtype=torch.long).to(device, non_blocking=True)
        return self._index[key]


class History:
    """Per-item tensors a multistep solver keeps between steps (e.g. the previous x0_hat)."""

    def __init__(self) -> None:
        self._data: dict[str, Tensor] = {}
        self._index = DeviceIndex()

    def read(self, name: str, idx: list[int] | None) -> Tensor | None:
        v = self._data.get(name)
        if v is None:
            return None
        return v if idx is None else v[self._index(idx, v.device)]

    def write(self, name: str, idx: list[int] | None, value: Tensor, batch: int) -> None:
        if idx is None:
            self._data[name] = value
            return
        if name not in self._data:
            self._data[name] = torch.zeros((batch, *value.shape[1:]), dtype=value.dtype, device=value.device)
        self._data[name][self._index(idx, value.device)] = value


def denoise(denoiser: Denoiser, x: Tensor, t: Tensor) -> DenoiserOutput:
    """One network evaluation at the scalar time ``t`` for every item."""
    out = as_output(denoiser(x, t.expand(x.shape[0])))
    if out.x0_hat.shape != x.shape:
        raise ValueError(f"denoiser returned shape {tuple(out.x0_hat.shape)} for input {tuple(x.shape)}")
    return out


class Solver:
    """Base class: the loop over the grid with per-item joining; subclasses write :meth:`step`.

    Attributes:
        name: the key in :data:`ccdf.sampling.solvers.SOLVERS`.
        evals_per_step: network evaluations per item and grid step (documented NFE = K' * this).
    """

    name = "solver"
    evals_per_step = 1

    def nfe(self, num_steps: int) -> int:
        """Network evaluations of one item that takes ``num_steps`` grid steps."""
        return int(num_steps) * self.evals_per_step

    def supports(self, schedule: Schedule) -> None:
        """Raise when the solver is not defined for this kind of schedule (VP only, say)."""

    def __call__(
        self,
        denoiser: Denoiser,
        schedule: Schedule,
        x: Tensor,
        grid: Tensor,
        *,
        start: Sequence[int],
        problem: Problem,
        cond: Conditioning,
        generator: Generator = None,
        callback: Callable[[StepInfo], None] | None = None,
        progress: bool = False,
        x0_clip: float | None = None,
    ) -> Tensor:
        """Run the grid; item b takes the steps ``start[b]..K-1`` (``grid`` has K + 1 points).

        ``x0_clip`` clamps every x0_hat to [-c, c] (guided-diffusion's ``clip_denoised``)."""
        self.supports(schedule)
        num_levels = int(grid.shape[0]) - 1
        sets = active_sets(start, num_levels)
        first_step = [int(k) for k in start]
        history = History()
        iterator = range(num_levels)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=self.name, unit="step", leave=False)
        batch = x.shape[0]
        track = getattr(denoiser, "set_items", None)  # a CountingDenoiser counts NFE per item
        index = DeviceIndex()
        # per active set, made before the pass: its sub-problem (A^+ y computed once), generators, device index
        plans: dict[tuple[int, ...] | None, tuple[Problem, Generator]] = {}
        for idx in sets:
            key = None if idx is None else tuple(idx)
            if key not in plans and (idx is None or idx):
                gen = generator if idx is None else select_generators(generator, _mask(idx, batch))
                plans[key] = (problem.select(idx), gen)
                if idx is not None:
                    index(idx, x.device)
        owned = False  # x is the caller's tensor until the first step replaces it
        for i in iterator:
            idx = sets[i]
            if idx is not None and not idx:
                continue
            members = range(batch) if idx is None else idx
            sub_problem, gen = plans[None if idx is None else tuple(idx)]
            first = [first_step[b] == i for b in members]
            t_prev = grid[i - 1] if i > 0 else None
            step = Step(i, grid[i], grid[i + 1], idx, sub_problem, gen, first, x0_clip, t_prev)
            xa = x if idx is None else x[index(idx, x.device)]
            if track is not None:
                track(list(members), batch)
            with grad_enabled(cond.needs_grad):
                xa, x0_hat = self.step(denoiser, schedule, xa, step, cond, history, batch)
            xa = xa.detach()
            if idx is None:
                x, owned = xa, True
            else:
                if not owned or x.requires_grad:  # never write into the caller's tensor
                    x, owned = x.clone(), True
                x[index(idx, x.device)] = xa
            if callback is not None:
                callback(StepInfo(i=i, t=float(step.t), x=xa, x0_hat=x0_hat.detach(), active=_mask(idx, batch)))
        return x

    def step(
        self, denoiser: Denoiser, schedule: Schedule, x: Tensor, step: Step, cond: Conditioning, history: History,
        batch: int,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """One grid step for the active items: returns (x_s, x0_hat)."""
        raise NotImplementedError

    def evaluate(self, denoiser: Denoiser, x: Tensor, step: Step, cond: Conditioning) -> tuple[Tensor, DenoiserOutput]:
        """The denoiser at (x, t) followed by the conditioning's ``denoised`` hook.

        Returns ``(x_t, out)``; with ``cond.needs_grad`` the returned ``x_t`` requires grad and
        ``out.x0_hat`` depends on it (the conditioning's ``step`` hook differentiates it).
        """
        if cond.needs_grad:
            x = x.detach().requires_grad_(True)
        out = denoise(denoiser, x, step.t)
        if step.x0_clip is not None:
            out = DenoiserOutput(out.x0_hat.clamp(-step.x0_clip, step.x0_clip), out.var_frac)
        x0_hat = cond.denoised(x, out.x0_hat, step.t, step.problem, step.generator)
        return x, DenoiserOutput(x0_hat, out.var_frac)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _mask(idx: list[int] | None, batch: int) -> Tensor:
    m = torch.ones(batch, dtype=torch.bool)
    if idx is not None:
        m[:] = False
        m[idx] = True
    return m
