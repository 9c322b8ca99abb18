"""fastMRI multi-coil volumes as SENSE problems (coil maps from files or ESPIRiT) and the bundled sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ccdf.data.images import center_crop, check_finite, list_files, samples_root

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
