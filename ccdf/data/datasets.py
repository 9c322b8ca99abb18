"""Data sets: image folders (PNG/JPEG), complex MRI slices (.npy), and the bundled samples.

Every item is a dict ``{"x0": Tensor [C, H, W], "index": int, "name": str}``; ``index`` keys
random generators and saved files, so results do not depend on batching or devices.
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ccdf.data.transforms import normalize_complex, to_model

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARRAY_EXTENSIONS = (".npy",)


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


class ComplexSliceFolder(Dataset):
    """A folder of 2-D ``.npy`` MRI slices (complex or magnitude), as complex ``[1, size, size]``.

    Each slice is centre-cropped to ``size`` and scaled to magnitude max 1 (score-MRI's
    convention for its samples). Real arrays become complex with zero imaginary part.
    """

    kind = "mri"

    def __init__(self, root: str | Path, size: int = 320, max_images: int | None = None) -> None:
        self.root = Path(root)
        self.files = list_files(root, ARRAY_EXTENSIONS)[:max_images]
        self.size = size
        self.channels = 1

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read MRI slice {path}: {err}") from err
        if arr.ndim != 2 or not (np.iscomplexobj(arr) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{path}: expected a 2-D complex or float array, got {arr.dtype} {arr.shape}")
        check_finite(arr, f"MRI slice {path}")
        x = torch.from_numpy(arr.astype(np.complex64))
        x = normalize_complex(center_crop(x, self.size), what=f"MRI slice {path}")
        return {"x0": x[None], "index": index, "name": path.stem}


class FastMRISlices(Dataset):
    """fastMRI single-coil HDF5 volumes (``kspace``: [slices, H, W] complex) as complex images.

    Each slice's fully sampled k-space becomes an image by the centred orthonormal inverse FFT
    (fastMRI's ``ifft2c``), is centre-cropped to ``size`` (320 for knee) and scaled to magnitude
    max 1, score-MRI's convention. Items are (file, slice) pairs in sorted order; ``edge_slices``
    drops that many slices at each end of a volume (they are mostly noise).
    """

    kind = "mri"

    def __init__(self, root: str | Path, size: int = 320, edge_slices: int = 0, max_images: int | None = None) -> None:
        import h5py

        self.root, self.size, self.channels = Path(root), size, 1
        self.items: list[tuple[Path, int]] = []
        for path in list_files(root, (".h5",)):
            try:
                with h5py.File(path, "r") as f:
                    if "kspace" not in f:
                        raise ValueError(f"no 'kspace' dataset (keys: {sorted(f.keys())})")
                    shape = f["kspace"].shape
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read fastMRI file {path}: {err}") from err
            if len(shape) != 3:
                raise ValueError(f"{path}: expected single-coil k-space [slices, H, W], got shape {shape}")
            self.items += [(path, k) for k in range(edge_slices, shape[0] - edge_slices)]
        self.items = self.items[:max_images]
        if not self.items:
            raise ValueError(f"no slices in the fastMRI files of {root}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        import h5py

        from ccdf.operators.mri import ifft2c

        path, k = self.items[index]
        try:
            with h5py.File(path, "r") as f:
                kspace = torch.from_numpy(np.asarray(f["kspace"][k]).astype(np.complex64))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot read slice {k} of fastMRI file {path}: {err}") from err
        what = f"slice {k} of fastMRI file {path}"
        check_finite(kspace, what)
        x = normalize_complex(center_crop(ifft2c(kspace), self.size), what=what)
        return {"x0": x[None], "index": index, "name": f"{path.stem}_{k:03d}"}


#: Values of ``maps`` that estimate the coil maps by ESPIRiT instead of reading them from files.
ESPIRIT = "espirit"


def espirit_maps(
    kspace: np.ndarray, calib_width: int = 24, thresh: float = 0.02, kernel_width: int = 6, crop: float = 0.95
) -> np.ndarray:
    """ESPIRiT coil maps (Uecker et al. 2014) from the central ``calib_width`` square of ``kspace`` ``[C, H, W]``.

    sigpy's ``sigpy.mri.app.EspiritCalib`` (kernel ``kernel_width``, singular values below ``thresh`` of the
    largest dropped, maps zeroed where the eigenvalue is below ``crop``), on the CPU. The maps have unit
    norm over the coils inside their support and the phase of coil 0 removed at each pixel.
    """
    import sigpy.mri
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small SVD and per-pixel C x C products: BLAS threads only contend (10x slower)
        calib = sigpy.mri.app.EspiritCalib(
            np.ascontiguousarray(kspace), calib_width=calib_width, thresh=thresh, kernel_width=kernel_width,
            crop=crop, show_pbar=False,
        )  # fmt: skip
        return np.asarray(calib.run()).astype(np.complex64)


class FastMRIMultiCoil(Dataset):
    """fastMRI multi-coil HDF5 volumes (``kspace`` [slices, coils, H, W]) as SENSE problems with their coil maps.

    Per slice: coil images ``ifft2c(kspace)`` centre-cropped to ``size`` x ``size`` (320 for fastMRI
    knee: the read-out oversampling goes, as in fastMRI's ``reconstruction_rss``), the cropped coil
    k-space ``fft2c`` of those, coil maps at that size (read from a file, or estimated by ESPIRiT from
    the cropped k-space's central ``calib_width`` square), then per item:

    * ``x0``: the coil-combined complex image ``sum_c conj(S_c) c_c / sum_c |S_c|^2`` ``[1, size, size]``
      (the least-squares image of the fully sampled coil images ``c_c``; the operator
      :class:`ccdf.operators.MultiCoilMRI` maps it back to coil k-space). The prior is a magnitude prior,
      applied to Re and Im separately as score-MRI does, so the sampler's unknown is this complex image:
      the RSS magnitude alone would lose the phase that the measured k-space carries;
    * ``ref``: the reference magnitude ``[1, size, size]``, fastMRI's root-sum-of-squares: the file's
      ``reconstruction_rss`` (centre-cropped to ``size``) when present, else the RSS of the cropped coil
      images. Metrics compare ``|x|`` with it (PSNR with data range = its maximum, SSIM, NMSE);
    * ``maps``: complex64 ``[coils, size, size]``.

    ``x0`` and ``ref`` are divided by the reference's maximum (so ``ref`` has max 1, the project's MRI
    convention). With maps normalised to ``sum_c |S_c|^2 = 1`` (ESPIRiT's, inside their support) ``|x0|``
    equals the RSS there; ESPIRiT maps vanish outside the object, and so does ``x0``.

    Measurements are simulated from ``x0`` through the maps (``y = M F (S x0)``, the SENSE model): for the
    bundled simulated sample (exact maps) this is the sampled k-space itself; for measured data it is the
    part of the k-space that the maps explain. Masks: ``operator=mri_multicoil`` (1-D Cartesian) or
    ``mri_multicoil_poisson`` (2-D Poisson disc).

    Args:
        root: folder of the HDF5 files (searched recursively, sorted).
        size: crop size (``size`` x ``size``).
        maps: ``"espirit"``, or a folder of map files named like the k-space files (``<stem>.h5``, relative
            paths as under ``root``) holding ``maps`` complex ``[slices, coils, H, W]`` or
            ``[coils, H, W]`` (shared by the slices), at the k-space's size (then cropped like the coil
            images) or at ``size``.
        calib_width, espirit_thresh, espirit_crop: ESPIRiT's settings (:func:`espirit_maps`).
        edge_slices: slices dropped at each end of a volume.
        max_images: keep the first items.

    Raises:
        ValueError: a file without ``kspace`` (or with k-space that is not ``[slices, coils, H, W]``, or
            smaller than ``size``), a maps file that is missing or whose shape does not match the
            k-space, or a ``reconstruction_rss`` smaller than ``size``; the message names the file and
            the shapes. Checked when the data set is built, before anything is sampled.
    """

    kind = "mri"

    def __init__(
        self,
        root: str | Path,
        size: int = 320,
        maps: str | Path = ESPIRIT,
        calib_width: int = 24,
        espirit_thresh: float = 0.02,
        espirit_crop: float = 0.95,
        edge_slices: int = 0,
        max_images: int | None = None,
    ) -> None:
        import h5py

        self.root, self.size, self.channels = Path(root), int(size), 1
        self.maps_root = None if str(maps) == ESPIRIT else Path(maps)
        if self.maps_root is not None and not self.maps_root.is_dir():
            raise ValueError(f"maps: coil-map folder not found: {self.maps_root} (or use maps=espirit)")
        bad_width = (
            isinstance(calib_width, bool) or not isinstance(calib_width, int) or not 2 <= calib_width <= self.size
        )
        if self.maps_root is None and bad_width:  # ESPIRiT's calibration square lies inside the crop
            raise ValueError(f"calib_width must be an integer in [2, size={self.size}], got {calib_width!r}")
        self.espirit = {"calib_width": calib_width, "thresh": float(espirit_thresh), "crop": float(espirit_crop)}
        self.items: list[tuple[Path, int]] = []
        self.maps_files: dict[Path, Path] = {}
        for path in list_files(root, (".h5",)):
            try:
                with h5py.File(path, "r") as f:
                    if "kspace" not in f:
                        raise ValueError(f"no 'kspace' dataset (keys: {sorted(f.keys())})")
                    shape = tuple(f["kspace"].shape)
                    rss_shape = tuple(f["reconstruction_rss"].shape) if "reconstruction_rss" in f else None
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read fastMRI multi-coil file {path}: {err}") from err
            if len(shape) != 4:
                raise ValueError(f"{path}: expected multi-coil k-space [slices, coils, H, W], got shape {shape}")
            if min(shape[-2:]) < self.size:
                raise ValueError(f"{path}: k-space of {shape[-2]}x{shape[-1]} is smaller than dataset.size={self.size}")
            if rss_shape is not None and (
                len(rss_shape) != 3 or rss_shape[0] != shape[0] or min(rss_shape[1:]) < self.size
            ):
                raise ValueError(f"{path}: reconstruction_rss of shape {rss_shape} does not fit k-space {shape} "
                                 f"cropped to {self.size}x{self.size}")  # fmt: skip
            if self.maps_root is not None:
                self.maps_files[path] = self._check_maps_file(path, shape)
            self.items += [(path, k) for k in range(edge_slices, shape[0] - edge_slices)]
        self.items = self.items[:max_images]
        if not self.items:
            raise ValueError(f"no slices in the fastMRI multi-coil files of {root}")
        self._maps_cache: dict[tuple[Path, int], np.ndarray] = {}

    def _check_maps_file(self, path: Path, kspace_shape: tuple[int, ...]) -> Path:
        import h5py

        maps_path = self.maps_root / path.relative_to(self.root)
        try:
            with h5py.File(maps_path, "r") as f:
                if "maps" not in f:
                    raise ValueError(f"no 'maps' dataset (keys: {sorted(f.keys())})")
                shape = tuple(f["maps"].shape)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read the coil maps {maps_path} of {path}: {err}") from err
        slices, coils, h, w = kspace_shape
        fits = (len(shape) == 3 or (len(shape) == 4 and shape[0] == slices)) and shape[-3] == coils
        if not fits or tuple(shape[-2:]) not in ((h, w), (self.size, self.size)):
            raise ValueError(
                f"coil maps {maps_path} have shape {shape}, which does not match the k-space {kspace_shape} of {path}: "
                f"expected [{slices}, {coils}, H, W] or [{coils}, H, W] with H x W = {h}x{w} (the k-space) or "
                f"{self.size}x{self.size} (dataset.size)"
            )
        return maps_path

    def __len__(self) -> int:
        return len(self.items)

    def _maps(self, path: Path, k: int, kspace: np.ndarray, full_size: tuple[int, int]) -> np.ndarray:
        """Coil maps ``[C, size, size]`` of slice ``k``: from the file or by ESPIRiT (computed once per slice)."""
        import h5py

        if (path, k) in self._maps_cache:
            return self._maps_cache[(path, k)]
        if self.maps_root is None:
            maps = espirit_maps(kspace, self.espirit["calib_width"], self.espirit["thresh"],
                                crop=self.espirit["crop"])  # fmt: skip
        else:
            maps_path = self.maps_files[path]
            with h5py.File(maps_path, "r") as f:
                ds = f["maps"]
                maps = np.asarray(ds[k] if ds.ndim == 4 else ds[()]).astype(np.complex64)
            check_finite(maps, f"coil maps {maps_path} (slice {k})")
            if maps.shape[-2:] == full_size and full_size != (self.size, self.size):
                maps = center_crop(torch.from_numpy(maps), self.size).numpy()
        self._maps_cache[(path, k)] = maps
        return maps

    def __getitem__(self, index: int) -> dict:
        import h5py

        from ccdf.operators.mri import fft2c, ifft2c
        from ccdf.operators.multicoil import rss, sense_combine

        path, k = self.items[index]
        what = f"slice {k} of fastMRI multi-coil file {path}"
        try:
            with h5py.File(path, "r") as f:
                kspace = np.asarray(f["kspace"][k]).astype(np.complex64)
                ref = np.asarray(f["reconstruction_rss"][k]).astype(np.float32) if "reconstruction_rss" in f else None
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"cannot read {what}: {err}") from err
        check_finite(kspace, what)
        full_size = tuple(kspace.shape[-2:])
        coils = center_crop(ifft2c(torch.from_numpy(kspace)), self.size)  # [C, size, size]
        kspace_crop = fft2c(coils).numpy()
        maps = torch.from_numpy(self._maps(path, k, kspace_crop, full_size))
        x = sense_combine(coils, maps)  # [1, size, size]
        ref_t = rss(coils, dim=0) if ref is None else center_crop(torch.from_numpy(ref), self.size)[None]
        check_finite(ref_t, f"reconstruction_rss of {what}")
        peak = float(ref_t.max())
        if not peak > 0:
            raise ValueError(f"{what}: all-zero reference image, cannot scale it to max 1")
        return {"x0": (x / peak).to(torch.complex64), "maps": maps.to(torch.complex64),
                "ref": (ref_t / peak).to(torch.float32), "index": index, "name": f"{path.stem}_{k:03d}"}  # fmt: skip


def bundled_multicoil(maps: str = ESPIRIT, size: int = 160, max_images: int | None = None, **espirit) -> Dataset:
    """The bundled simulated 8-coil knee sample (:mod:`ccdf.data.simulate`): ``maps="espirit"`` estimates
    the maps, ``maps="file"`` reads the simulation's exact maps."""
    root = samples_root() / "fastmri_knee_multicoil"
    if maps not in (ESPIRIT, "file"):
        raise ValueError(f"maps must be 'espirit' or 'file' for the bundled multi-coil sample, got {maps!r}")
    folder = root / "maps" if maps == "file" else ESPIRIT
    return FastMRIMultiCoil(root / "kspace", size=size, maps=folder, max_images=max_images, **espirit)


def splits_root() -> Path:
    """Folder of the evaluation/training split files shipped with the package."""
    return Path(str(resources.files("ccdf") / "assets" / "splits"))


def samples_root() -> Path:
    """Folder of the bundled samples (package data, see its README.md)."""
    return Path(str(resources.files("ccdf") / "assets" / "samples"))


def bundled_samples(name: str = "ffhq", split: str = "eval", size: int = 256, max_images: int | None = None) -> Dataset:
    """The bundled real samples: ``ffhq`` (RGB faces) or ``fastmri_knee`` (complex knee slices).

    ``split="eval"`` is what the demo reconstructs; ``split="prior"`` is what the Gaussian
    prior is fitted to; the two never overlap.
    """
    if split not in ("eval", "prior"):
        raise ValueError(f"split must be 'eval' or 'prior', got {split!r}")
    root = samples_root() / name / split
    if name == "ffhq":
        return ImageFolder(root, size=size, channels=3, max_images=max_images)
    if name == "fastmri_knee":
        return ComplexSliceFolder(root, size=size, max_images=max_images)
    raise ValueError(f"unknown bundled sample set {name!r}; choose 'ffhq' or 'fastmri_knee'")


def stack_images(dataset: Dataset, max_images: int | None = None) -> Tensor:
    """All items' ``x0`` stacked: ``[M, C, H, W]``."""
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return torch.stack([dataset[i]["x0"] for i in range(n)])


class GaussianFieldDataset(Dataset):
    """Draws from a Gaussian prior as a data set (item i is seeded by (seed, i)).

    With :class:`ccdf.denoisers.gaussian.StationaryGaussianPrior` the exact MMSE denoiser is
    known, which makes it the ground truth for checking that training learns.
    """

    kind = "image"

    def __init__(self, prior, size: int, length: int = 10000, seed: int = 0) -> None:
        self.prior, self.size, self.length, self.seed = prior, size, length, seed
        self.channels = prior.channels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        from ccdf.utils.rng import sample_seed

        g = torch.Generator().manual_seed(sample_seed(self.seed, index))
        x0 = self.prior.sample(1, self.size, self.size, g, dtype=torch.float32)[0]
        return {"x0": x0, "index": index, "name": f"field_{index:06d}"}
