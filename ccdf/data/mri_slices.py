"""Single-coil MRI slices: a folder of ``.npy`` slices and fastMRI single-coil HDF5 volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ccdf.data.images import center_crop, check_finite, list_files
from ccdf.data.transforms import normalize_complex

ARRAY_EXTENSIONS = (".npy",)


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
