"""Discrete variance-preserving schedules (DDPM, IDDPM, guided-diffusion)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ccdf.schedules.base import TimeMemo, as_time, num_steps_from_t0, uniform_timesteps


def linear_betas(num_steps: int = 1000) -> Tensor:
    """DDPM's linear betas (Ho et al. 2020), scaled to ``num_steps`` as guided-diffusion does."""
    scale = 1000.0 / num_steps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """IDDPM's cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas clipped at ``max_beta``."""

    def abar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta) for i in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float64)


def space_timesteps(num_steps: int, section_counts: str | int) -> list[int]:
    """IDDPM / guided-diffusion timestep respacing: the kept 0-based indices of the original chain.

    Equal to ``space_timesteps`` of openai/improved-diffusion and openai/guided-diffusion
    (``respace.py``), as a sorted list: ``"100"`` keeps 100 indices of the chain at a fractional stride
    ``(size - 1) / (count - 1)`` that is ACCUMULATED in floating point and rounded at each index (as the
    official loop does; rounding ``stride * j`` instead differs by one index for 278 of the counts
    1..1000); ``"10,15,20"`` splits the chain in equal sections with those counts; ``"ddim50"`` keeps
    ``range(0, N, stride)`` for the integer stride giving exactly 50 indices (the DDIM paper's striding).

    >>> space_timesteps(1000, "10")[:3], space_timesteps(1000, "10")[-1]
    ([0, 111, 222], 999)
    >>> space_timesteps(1000, "ddim4")
    [0, 250, 500, 750]
    """
    text = str(section_counts).strip()
    if text.startswith("ddim"):
        try:
            desired = int(text[len("ddim") :])
        except ValueError:
            raise ValueError(f"respacing {text!r}: 'ddim' must be followed by a step count, e.g. 'ddim50'") from None
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == desired:
                return list(range(0, num_steps, stride))
        raise ValueError(f"respacing {text!r}: cannot create exactly {desired} steps with an integer stride "
                         f"from {num_steps}")  # fmt: skip
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise ValueError(f"respacing {text!r}: expected a count ('100'), section counts ('10,15,20') or "
                         f"'ddimN'") from None  # fmt: skip
    if any(c < 1 for c in counts):
        raise ValueError(f"respacing {text!r}: section counts must be >= 1")
    size_per, extra = divmod(num_steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"respacing {text!r}: cannot divide a section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        index = 0.0  # accumulated, not stride * j: the official loop's rounding
        for _ in range(count):
            kept.append(start + round(index))
            index += stride
        start += size
    return sorted(set(kept))


class DiscreteVP:
    r"""Discrete VP chain with betas :math:`\beta_1..\beta_N`, extended to continuous t.

    Index ``i`` of the chain (0 = data, ``i`` = guided-diffusion's timestep ``i - 1``) sits at
    ``t = i / N``; ``alpha(t)^2`` is :math:`\bar\alpha_i` on the grid and log-linear between
    grid points, so any grid of multiples of ``1/N`` reproduces the discrete (respaced) chain
    exactly: a step from ``t`` to ``s`` has :math:`\beta' = 1 - \bar\alpha(t)/\bar\alpha(s)`, as in
    IDDPM's ``SpacedDiffusion``.

    Args:
        betas: ``[N]`` betas of the original chain.
        spacing: ``"uniform"`` (grid ``k / num_steps``) or ``"iddpm"`` (kept indices from
            :func:`space_timesteps`, as ILVR's ``--timestep_respacing``).
        respacing: with ``spacing="iddpm"`` only: the ``--timestep_respacing`` string itself, e.g.
            ``"ddim50"`` or ``"10,15,20"``. Its kept indices are the grid, so ``timesteps`` must then be
            called with ``num_steps`` equal to their count (50, 45). None (default): the string is
            ``str(num_steps)``.
    """

    kind = "vp"

    def __init__(self, betas: Tensor, spacing: str = "uniform", respacing: str | None = None) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with entries in (0, 1)")
        if spacing not in ("uniform", "iddpm"):
            raise ValueError(f"spacing must be 'uniform' or 'iddpm', got {spacing!r}")
        self.betas = betas
        self.num_train_steps = int(betas.shape[0])
        self.spacing = spacing
        self.respacing = None if respacing is None else str(respacing).strip()
        self.kept: list[int] | None = None  # the kept indices of a given respacing string
        if self.respacing is not None:
            if spacing != "iddpm":
                raise ValueError(f"respacing={self.respacing!r} needs spacing='iddpm', got spacing={spacing!r}")
            self.kept = space_timesteps(self.num_train_steps, self.respacing)
        # log abar_i for i = 0..N (abar_0 = 1 at the data).
        self.log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        self._memo = TimeMemo()  # alpha/sigma at the grid's times, computed once per run

    @classmethod
    def linear(cls, num_train_steps: int = 1000, spacing: str = "uniform", respacing: str | None = None) -> DiscreteVP:
        return cls(linear_betas(num_train_steps), spacing=spacing, respacing=respacing)

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, spacing: str = "uniform", respacing: str | None = None) -> DiscreteVP:
        return cls(cosine_betas(num_train_steps), spacing=spacing, respacing=respacing)

    def __repr__(self) -> str:
        extra = "" if self.respacing is None else f", respacing={self.respacing!r}"
        return f"DiscreteVP(N={self.num_train_steps}, spacing={self.spacing!r}{extra})"

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        u = as_time(t).clamp(0.0, 1.0) * self.num_train_steps
        lo = u.floor().clamp(max=self.num_train_steps - 1)
        w = u - lo
        lo = lo.long()
        return (1 - w) * self.log_abar[lo] + w * self.log_abar[lo + 1]

    def alpha(self, t: Tensor | float) -> Tensor:
        return self._memo("alpha", t, lambda u: torch.exp(0.5 * self.log_alpha_bar(u)))

    def sigma(self, t: Tensor | float) -> Tensor:
        return self._memo("sigma", t, lambda u: torch.sqrt(-torch.expm1(self.log_alpha_bar(u))))

    def timesteps(self, num_steps: int, t_start: float = 1.0) -> Tensor:
        if self.spacing == "uniform":
            return uniform_timesteps(num_steps, t_start)
        if self.kept is not None and num_steps != len(self.kept):
            n = len(self.kept)
            raise ValueError(f"respacing={self.respacing!r} keeps {n} timesteps, but num_steps={num_steps}: "
                             f"num_steps must be {n}")  # fmt: skip
        k = num_steps_from_t0(t_start, num_steps)
        kept = self.kept if self.kept is not None else space_timesteps(self.num_train_steps, str(num_steps))
        full = torch.tensor([0.0] + [(i + 1) / self.num_train_steps for i in kept], dtype=torch.float64)
        return full[: k + 1].flip(0)

    def to_index(self, t: Tensor) -> Tensor:
        """The original chain's 0-based timestep for a grid time (what guided-diffusion nets take)."""
        return (as_time(t) * self.num_train_steps).round().long() - 1
