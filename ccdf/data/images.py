"""Image folders (PNG/JPEG): file lists and splits, loading, cropping; the package's asset folders."""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ccdf.data.transforms import to_model

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_split(path: str | Path) -> set[str]:
    """Names in a split file: one per line (a file stem such as ``00042``); ``#`` starts a comment.

    A bare file name that does not exist in the working directory is looked up among the split
    files shipped with the package (``ccdf/assets/splits``).
    """
    path = Path(path)
    if not path.is_file() and path.parent == Path(".") and (splits_root() / path).is_file():
        path = splits_root() / path
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    names = {line.split("#", 1)[0].strip() for line in path.read_text().splitlines()}
    names.discard("")
    if not names:
        raise ValueError(f"split file {path} lists no images")
    return names


def apply_split(files: list[Path], include: str | Path | None, exclude: str | Path | None, root: Path) -> list[Path]:
    """Keep the files whose stem is in ``include`` and not in ``exclude`` (split files)."""
    if include is not None:
        keep = read_split(include)
        files = [f for f in files if f.stem in keep]
    if exclude is not None:
        drop = read_split(exclude)
        files = [f for f in files if f.stem not in drop]
    if not files:
        raise ValueError(f"no images of {root} are left after the split files (include={include}, exclude={exclude})")
    return files


def list_files(root: str | Path, extensions: tuple[str, ...]) -> list[Path]:
    """Sorted files under ``root`` (recursively) with one of ``extensions``; clear errors otherwise."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"no {'/'.join(extensions)} files in {root}")
    return files


#: An image whose shorter side is more than this many times smaller than ``size`` is upscaled with a warning.
UPSCALE_WARN_FACTOR = 2.0


class UpscaledImageWarning(UserWarning):
    """An image was upscaled by more than :data:`UPSCALE_WARN_FACTOR` to reach the data set's size."""


def load_image(path: Path, size: int, channels: int = 3) -> Tensor:
    """Read an image as ``[C, size, size]`` in [-1, 1]: RGBA/palette/grayscale converted,
    shorter side resized (bicubic, anti-aliased) to ``size``, then centre-cropped.

    Value range: 8-bit images map 0..255 to [0, 1]; 16-bit grayscale images (PIL modes ``I;16*``,
    and ``I`` with values in 0..65535) map 0..65535 to [0, 1] at full 16-bit precision and are resized
    in floating point. 16-bit RGB(A) PNGs are decoded by PIL at 8 bits per channel (the high byte):
    full range, 8-bit precision. Floating-point images (mode ``F``) are refused: their range is unknown.

    An image whose shorter side is upscaled by more than :data:`UPSCALE_WARN_FACTOR` (2x) gets an
    :class:`UpscaledImageWarning` naming the file and the factor: such a ground truth is mostly
    interpolation, and its scores say little. It is a warning, not an error, since small images at a
    model's size can be a deliberate choice.

    Raises:
        ValueError: the file cannot be decoded, or holds an unsupported mode; the message names it.
    """
    from PIL import Image, UnidentifiedImageError

    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "F" or img.mode.startswith("I;32"):
                raise ValueError(
                    f"unsupported image mode {img.mode} (floating point or 32-bit); save it as 8 or 16 bit"
                )
            if img.mode == "I" or img.mode.startswith("I;16"):
                wide = np.asarray(img).astype(np.float64)
                if wide.size and (wide.min() < 0 or wide.max() > 65535):
                    raise ValueError(f"32-bit values outside 0..65535 (mode {img.mode}); save it as 8 or 16 bit")
                img = Image.fromarray((wide / 65535).astype(np.float32), mode="F")
            else:
                if img.mode in ("RGBA", "LA", "P") and mode == "RGB":
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                img = img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    w, h = img.size
    scale = size / min(w, h)
    if scale > UPSCALE_WARN_FACTOR:
        warnings.warn(
            f"{path}: {w}x{h} image upscaled {scale:.1f}x to {size}x{size} (more than {UPSCALE_WARN_FACTOR:g}x)",
            UpscaledImageWarning,
            stacklevel=2,
        )
    if (w, h) != (size, size):
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        img = img.resize(new, Image.BICUBIC, reducing_gap=None)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
    if img.mode == "F":  # 16-bit data, already in [0, 1] (bicubic may overshoot: clip like 8-bit resizing does)
        arr = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
        arr = np.repeat(arr[:, :, None], channels, axis=2)
    else:
        arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return to_model(torch.from_numpy(arr.copy()).permute(2, 0, 1))


def check_finite(arr: np.ndarray | Tensor, what: str) -> None:
    """Raise a ValueError naming ``what`` (the file, and slice) when ``arr`` holds NaN or infinity."""
    values = torch.as_tensor(arr)
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{what}: {bad} of {values.numel()} values are NaN or infinite")


def center_crop(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"image of {h}x{w} is smaller than the crop size {size}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


class ImageFolder(Dataset):
    """Any folder of PNG/JPEG images (searched recursively, sorted by path).

    Args:
        root: the folder.
        size: output side length (resize shorter side, centre crop).
        channels: 3 (RGB) or 1 (grayscale).
        max_images: keep the first ``max_images`` files (None: all).
        include: a split file naming the images to use (e.g. ``ccdf/assets/splits/ffhq_eval.txt``).
        exclude: a split file naming images never to use (training sets exclude the evaluation split).
    """

    kind = "image"

    def __init__(
        self,
        root: str | Path,
        size: int = 256,
        channels: int = 3,
        max_images: int | None = None,
        include: str | Path | None = None,
        exclude: str | Path | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root = Path(root)
        self.files = apply_split(list_files(root, IMAGE_EXTENSIONS), include, exclude, self.root)[:max_images]
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        return {"x0": load_image(path, self.size, self.channels), "index": index, "name": path.stem}


def splits_root() -> Path:
    """Folder of the evaluation/training split files shipped with the package."""
    return Path(str(resources.files("ccdf") / "assets" / "splits"))


def samples_root() -> Path:
    """Folder of the bundled samples (package data, see its README.md)."""
    return Path(str(resources.files("ccdf") / "assets" / "samples"))
