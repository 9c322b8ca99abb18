"""The errors a checkpoint can raise: each names the file and says what fits."""

from __future__ import annotations

from collections.abc import Iterable

from ccdf.utils.text import fmt_keys  # re-exported: the checkpoint modules' key lists

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "NonFiniteCheckpointError",
    "UnsafeCheckpointError",
    "fmt_keys",
]


class CheckpointError(ValueError):
    """A checkpoint file cannot be used (base class of the errors below, except not-found)."""


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint path does not exist; the message says where the official file is published."""


class CheckpointReadError(CheckpointError):
    """The file is truncated, corrupt, or not a checkpoint at all."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle holds objects other than tensors and plain containers (``weights_only`` refused it)."""


class NonFiniteCheckpointError(CheckpointError):
    """The file holds NaN or infinite weights (a diverged or corrupted training run)."""


class CheckpointMismatchError(CheckpointError):
    """The state dict does not fit the network: missing, unexpected or mis-shaped keys.

    Attributes:
        missing: keys the network needs that the file lacks.
        unexpected: keys in the file the network does not have.
        mismatched: ``(key, file shape, network shape)`` triples.
        matches: names of presets whose fingerprint equals the file's.
    """

    def __init__(
        self,
        message: str,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
        matches: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = sorted(mismatched)
        self.matches = list(matches)
