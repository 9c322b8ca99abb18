"""Local weight files of the FID/KID and LPIPS networks: names, download URLs, clear errors.

Nothing in ``ccdf`` downloads: a missing file raises :class:`MissingWeightsError`, whose message
says which file is missing, where it must go and how to fetch it. The table below is the single
place that names the files. LPIPS's linear heads are not among them: they ship inside the
installed torchmetrics wheel (:mod:`ccdf.metrics.lpips`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightFile:
    """A weight file the metrics need: its expected file name, source URL and what it is."""

    filename: str
    url: str
    description: str


WEIGHT_FILES: dict[str, WeightFile] = {
    "inception": WeightFile(
        "inception-2015-12-05.pt",
        # the URL of the installed clean-fid (cleanfid.downloads_helper.inception_url)
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        "clean-fid's Inception-v3 (TorchScript) for FID/KID",
    ),
    "alexnet": WeightFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "torchvision AlexNet (ImageNet), the LPIPS-Alex backbone",
    ),
    "vgg16": WeightFile(
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "torchvision VGG16 (ImageNet), the LPIPS-VGG backbone",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """A metric's weight file is not on disk; the message says where it goes and how to get it."""


class CorruptWeightsError(ValueError):
    """A weight file exists but is not the expected format (truncated download, wrong file)."""


def _local_copies(key: str) -> list[Path]:
    """Copies of the file that other tools may already have downloaded on this machine (never fetched)."""
    name = WEIGHT_FILES[key].filename
    found: list[Path] = []
    if key == "inception":
        found.append(Path("/tmp") / name)  # clean-fid's own download location
    elif key in ("alexnet", "vgg16"):
        import torch.hub

        found.append(Path(torch.hub.get_dir()) / "checkpoints" / name)  # torchvision's cache
    return [p for p in found if p.is_file()]


def fetch_hint(key: str, path: str | Path) -> str:
    """The few lines that tell a user how to put ``WEIGHT_FILES[key]`` at ``path``."""
    spec = WEIGHT_FILES[key]
    path = Path(path)
    lines = [
        f"{spec.description}: expected the file {spec.filename!r} at {path}",
        f"  download it from {spec.url}, e.g.",
        f"    mkdir -p {path.parent} && curl -L -o {path} {spec.url}",
        f"    (or: wget -O {path} {spec.url})",
    ]
    for copy in _local_copies(key):
        lines.append(f"  a copy already exists on this machine: cp {copy} {path}")
    return "\n".join(lines)


def require_file(key: str, path: str | Path) -> Path:
    """``path`` if it is a file, else :class:`MissingWeightsError` with :func:`fetch_hint`."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"missing weights.\n{fetch_hint(key, path)}\nccdf never downloads weights itself.")
    return path


def resolve(key: str, path: str | Path | None, weights_dir: str | Path | None) -> Path:
    """The file for ``key``, checked to exist: ``path`` if given, else ``weights_dir``.

    A folder (existing, or a path without a suffix such as ``checkpoints/metrics``) stands for the
    standard file name inside it; a path with a suffix is the file itself.
    """
    if path is None:
        if weights_dir is None:
            raise ValueError(f"give the path of {WEIGHT_FILES[key].filename} or a weights folder that holds it")
        path = weights_dir
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / WEIGHT_FILES[key].filename
    return require_file(key, path)
