"""Step-indexed data loading: the batch of global step k is a pure function of (seed, k).

Lightning restarts a resumed epoch from its first batch and pads uneven shards; both would make
a resumed or multi-process run see other data than an uninterrupted single-process one. Here
the global batch of step k is fixed by (seed, k), and process r of w takes items r, r + w, ...
of it, so any number of processes trains on exactly the same global batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ccdf.utils.rng import sample_seed


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's share of the global batches for steps ``start_step .. num_steps - 1``.

    Epochs are random permutations of the data set seeded by (seed, epoch); the global batch of
    step k is positions ``[k B, (k + 1) B)`` of the concatenated permutations.
    """

    def __init__(
        self, num_items: int, global_batch: int, num_steps: int, *, seed: int = 0,
        start_step: int | Callable[[], int] = 0, rank: int = 0, world_size: int = 1,
    ) -> None:  # fmt: skip
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        if num_items < 1:
            raise ValueError("cannot train on an empty data set")
        self.num_items, self.global_batch, self.num_steps = num_items, global_batch, num_steps
        self.seed, self.start_step, self.rank, self.world_size = seed, start_step, rank, world_size

    def permutation(self, epoch: int) -> list[int]:
        """The data order of ``epoch`` (cached: a batch spans at most two epochs)."""
        cache = self.__dict__.setdefault("_perms", {})
        if epoch not in cache:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch))
            cache[epoch] = torch.randperm(self.num_items, generator=g).tolist()
            for old in [e for e in cache if e < epoch - 1]:
                del cache[old]
        return cache[epoch]

    def global_batch_indices(self, step: int) -> list[int]:
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            epoch, offset = divmod(pos, self.num_items)
            out.append(self.permutation(epoch)[offset])
        return out

    def _start(self) -> int:
        return int(self.start_step()) if callable(self.start_step) else int(self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        # The first step is read when iteration starts: Lightning may create the loader before
        # restoring a checkpoint and may iterate it again after a restart.
        for step in range(self._start(), self.num_steps):
            yield self.global_batch_indices(step)[self.rank :: self.world_size]

    def __len__(self) -> int:
        return max(0, self.num_steps - self._start())


def collate(items: list[dict]) -> dict:
    return {"x0": torch.stack([it["x0"] for it in items]), "index": torch.tensor([int(it["index"]) for it in items])}


class StepDataModule(L.LightningDataModule):
    """Training data for ``max_steps`` steps of ``global_batch`` items (resume- and DDP-exact)."""

    def __init__(self, dataset: Dataset, *, global_batch: int, max_steps: int, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.dataset, self.global_batch, self.max_steps = dataset, global_batch, max_steps
        self.seed, self.num_workers = seed, num_workers

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer

        def start() -> int:
            return int(trainer.global_step) if trainer is not None else 0

        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        sampler = StepBatchSampler(len(self.dataset), self.global_batch, self.max_steps, seed=self.seed,
                                   start_step=start, rank=rank, world_size=world)  # fmt: skip
        return DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)
