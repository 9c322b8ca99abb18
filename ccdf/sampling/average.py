r"""K independent warm starts from the same x_init, averaged (the budget question, docs/theory.md §10).

With a fixed number B of network evaluations one may run one warm start with N' = B or K
warm starts with N' = B/K each and average them. The K runs share the initial estimate and the
measurement; each has its own forward jump and its own reverse-step and conditioning noise.
For a Gaussian prior the mean squared error of the average is exact
(:func:`ccdf.theory.budget.average_error`): the noise part of V falls as 1/K, the bias and the
surviving initial error do not.

Randomness: run k of item b draws from its own generator, seeded from one draw of the item's
generator (:func:`run_generators`), so an image's K runs, and hence its average, do not depend
on the batch it came in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ccdf.utils.rng import Generator, sample_seed

__all__ = ["run_generators", "sample_average"]


def run_generators(generator: Generator, runs: int) -> list[Generator]:
    """The generators of ``runs`` independent runs, derived from an item's (or the batch's) generator.

    Args:
        generator: None, one generator for the batch, or one per item.
        runs: K >= 1.

    Returns:
        ``runs`` entries of the same kind as ``generator``. With per-item generators, entry k is a
        list with one fresh generator per item, seeded by ``sample_seed(draw_b, k)`` where ``draw_b``
        is one 63-bit draw of item b's generator: item b's K streams depend on its generator only.
        ``runs = 1`` returns ``[generator]`` unchanged (the plain run, bit for bit).
    """
    if runs < 1:
        raise ValueError(f"the number of averaged runs must be >= 1, got {runs}")
    if runs == 1:
        return [generator]
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * runs  # one stream for the batch: the runs follow each other in it
    draws = [int(torch.randint(0, 2**63 - 1, (), generator=g)) for g in generator]
    out: list[Generator] = []
    for k in range(runs):
        gens = []
        for g, draw in zip(generator, draws, strict=True):
            child = torch.Generator(device=g.device)
            child.manual_seed(sample_seed(draw, k))
            gens.append(child)
        out.append(gens)
    return out


def sample_average(
    sampler: Callable[..., Tensor], *args, average: int, generator: Generator = None, **kwargs
) -> Tensor:
    r"""Mean of ``average`` = K independent runs of ``sampler(*args, generator=..., **kwargs)``.

    Args:
        sampler: a sampling function that takes ``generator=`` (e.g. :func:`ccdf.sampling.sample_ccdf`).
        *args, **kwargs: passed to every run unchanged (the same ``x_init``, ``y`` and ``t0``).
        average: K >= 1.
        generator: as :func:`run_generators`; each run gets its own stream.

    Returns:
        The average of the K reconstructions, same shape and dtype. The runs go one after another
        (memory of one run); a counting denoiser sees K times the evaluations of one run (NFE = K N').
    """
    if not isinstance(average, int) or isinstance(average, bool) or average < 1:
        raise ValueError(f"sampler.average (the number of averaged runs) must be an integer >= 1, got {average!r}")
    total = None
    for gen in run_generators(generator, average):
        x = sampler(*args, generator=gen, **kwargs)
        total = x if total is None else total + x
    return total if average == 1 else total / average
