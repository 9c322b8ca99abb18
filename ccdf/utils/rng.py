"""Explicit randomness: every random draw in ``ccdf`` takes a generator argument.

A *generator* is either ``None`` (torch's global generator), one :class:`torch.Generator`
shared by the whole batch, or a sequence of generators, one per batch item (EDM's
``StackedRandomGenerator``). With per-item generators the noise an image receives does
not depend on which other images share its batch, nor on the number of devices.

Determinism contract of an evaluation run (:mod:`ccdf.lightning.reconstruction`): an image's
per-image operator parameters and measurement noise come from CPU generators (the same numbers
on any machine); the sampler's draws (forward jump, per-step noise) come from generators on the
model's device (:func:`sampler_generators`: Philox on CUDA, so no draw is copied from the host
inside the loop). Results are therefore the same for any batch size and any number of devices
of one kind; a CUDA run and a CPU run of the same seed differ (different generators), as do
runs on different kinds of accelerator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """One round of SplitMix64 (Steele et al. 2014): a bijective 64-bit mixer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seed(seed: int, index: int) -> int:
    """Seed for data-set item ``index`` of a run with global ``seed`` (collision-free mixing).

    >>> sample_seed(0, 1) != sample_seed(1, 0)
    True
    """
    return _splitmix64(_splitmix64(seed & _MASK64) ^ (index & _MASK64)) >> 1


def per_sample_generators(
    seed: int, indices: Sequence[int] | Tensor, device: torch.device | str = "cpu", stream: int = 0
) -> list[torch.Generator]:
    """One generator per item, keyed by its data-set index: results are independent of batching.

    ``stream`` > 0 gives an independent family of generators for the same (seed, index) (its seeds are
    mixed once more with the stream number)."""
    if isinstance(indices, Tensor):
        indices = indices.tolist()
    gens = []
    for index in indices:
        g = torch.Generator(device=device)
        s = sample_seed(seed, int(index))
        g.manual_seed(s if stream == 0 else sample_seed(s, int(stream)))
        gens.append(g)
    return gens


SAMPLER_STREAM = 1  # the stream of the sampler's generators on an accelerator


def sampler_generators(
    seed: int, indices: Sequence[int], device: torch.device | str, cpu_generators: list[torch.Generator]
) -> list[torch.Generator]:
    """The per-item generators of the sampler's draws on ``device`` (see the module's determinism contract).

    On the CPU these are ``cpu_generators`` themselves (the sampler continues each item's stream after its
    measurement draws, as always). On an accelerator they are new generators on that device (Philox on
    CUDA) seeded from (seed, index, :data:`SAMPLER_STREAM`): the loop's noise is drawn where the state is.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return cpu_generators
    return per_sample_generators(seed, indices, device=device, stream=SAMPLER_STREAM)


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype


def randn(shape: Sequence[int], *, generator: Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Standard normal noise of ``shape``; complex dtypes get N(0, 1) real *and* imaginary parts.

    Complex images are treated as two real images (as score-MRI treats Re and Im), so each
    real component has unit variance.
    """
    shape = tuple(shape)
    if generator is not None and not isinstance(generator, torch.Generator):
        gens = list(generator)
        if len(gens) != shape[0]:
            raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
        if not dtype.is_complex and all(g.device == torch.device(device) for g in gens):
            out = torch.empty(shape, dtype=dtype, device=device)  # each item's draw straight into its slot
            for b, g in enumerate(gens):
                torch.randn(shape[1:], generator=g, dtype=dtype, device=device, out=out[b])
            return out
        return torch.stack([randn(shape[1:], generator=g, dtype=dtype, device=device) for g in gens])
    real = _real_dtype(dtype)
    if dtype.is_complex:
        re = _randn_real(shape, generator, real, device)
        im = _randn_real(shape, generator, real, device)
        return torch.complex(re, im)
    return _randn_real(shape, generator, real, device)


def _randn_real(shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype, device) -> Tensor:
    gen_device = generator.device if generator is not None else torch.device(device)
    # Draw on the generator's device, then move: identical numbers whatever the target device.
    out = torch.randn(shape, generator=generator, dtype=dtype, device=gen_device)
    return out.to(device)


def randn_like(x: Tensor, generator: Generator) -> Tensor:
    """Standard normal noise shaped like ``x`` (see :func:`randn`)."""
    return randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def select_generators(generator: Generator, mask: Tensor) -> Generator:
    """The generators of the items where ``mask`` is true (a shared generator is returned as is)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return [g for g, m in zip(generator, mask.tolist(), strict=True) if m]


def rand(shape: Sequence[int], *, generator: Generator, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) numbers on the CPU (masks and other small draws)."""
    shape = tuple(shape)
    if generator is not None and not isinstance(generator, torch.Generator):
        return torch.stack([torch.rand(shape[1:], generator=g, dtype=dtype) for g in generator])
    return torch.rand(shape, generator=generator, dtype=dtype)
