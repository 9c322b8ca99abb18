"""Discrete variance-preserving schedules (DDPM, IDDPM, guided-diffusion)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ccdf.schedules.base import as_time, num_steps_from_t0, uniform_timesteps


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

    ``"100"`` keeps 100 evenly strided indices of 1000 (stride (size-1)/(count-1), rounded);
    ``"10,15,20"`` splits the chain in equal sections with those counts; ``"ddim50"`` keeps
    ``range(0, N, N // 50)``.

    >>> space_timesteps(1000, "10")[:3], space_timesteps(1000, "10")[-1]
    ([0, 111, 222], 999)
    >>> space_timesteps(1000, "ddim4")
    [0, 250, 500, 750]
    """
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        desired = int(section_counts[len("ddim") :])
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == desired:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot create exactly {desired} steps with an integer stride from {num_steps}")
    counts = [int(c) for c in str(section_counts).split(",")]
    size_per, extra = divmod(num_steps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        kept += [start + round(stride * j) for j in range(count)]
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
    """

    kind = "vp"

    def __init__(self, betas: Tensor, spacing: str = "uniform") -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor with entries in (0, 1)")
        if spacing not in ("uniform", "iddpm"):
            raise ValueError(f"spacing must be 'uniform' or 'iddpm', got {spacing!r}")
        self.betas = betas
        self.num_train_steps = int(betas.shape[0])
        self.spacing = spacing
        # log abar_i for i = 0..N (abar_0 = 1 at the data).
        self.log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])

    @classmethod
    def linear(cls, num_train_steps: int = 1000, spacing: str = "uniform") -> DiscreteVP:
        return cls(linear_betas(num_train_steps), spacing=spacing)

    @classmethod
    def cosine(cls, num_train_steps: int = 1000, spacing: str = "uniform") -> DiscreteVP:
        return cls(cosine_betas(num_train_steps), spacing=spacing)

    def __repr__(self) -> str:
        return f"DiscreteVP(N={self.num_train_steps}, spacing={self.spacing!r})"

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        u = as_time(t).clamp(0.0, 1.0) * self.num_train_steps
        lo = u.floor().clamp(max=self.num_train_steps - 1)
        w = u - lo
        lo = lo.long()
        return (1 - w) * self.log_abar[lo] + w * self.log_abar[lo + 1]

    def alpha(self, t: Tensor | float) -> Tensor:
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def timesteps(self, num_steps: int, t_start: float = 1.0) -> Tensor:
        if self.spacing == "uniform":
            return uniform_timesteps(num_steps, t_start)
        k = num_steps_from_t0(t_start, num_steps)
        kept = space_timesteps(self.num_train_steps, str(num_steps))
        full = torch.tensor([0.0] + [(i + 1) / self.num_train_steps for i in kept], dtype=torch.float64)
        return full[: k + 1].flip(0)

    def to_index(self, t: Tensor) -> Tensor:
        """The original chain's 0-based timestep for a grid time (what guided-diffusion nets take)."""
        return (as_time(t) * self.num_train_steps).round().long() - 1
