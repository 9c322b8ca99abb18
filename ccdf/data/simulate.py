r"""The bundled multi-coil sample: 8-coil k-space simulated from the bundled knee slice with analytic coil maps.

Regenerate ``ccdf/assets/samples/fastmri_knee_multicoil/`` with::

    python -m ccdf.data.simulate

Simulation (:func:`simulate_sample`, every step in float64/complex128, stored as complex64/float32):

1. Images: two 128 x 128 crops of the bundled complex knee slice
   ``fastmri_knee/eval/single_coil_001.npy`` (magnitude max 1, its own phase), rows 96:224 and 16:144,
   columns 96:224 of the 320 x 320 slice, each zero-padded by 16 pixels to 160 x 160, stored as the two
   slices of one volume. The zero border puts the whole object inside the field of view, as in a real
   scan; a plain 160 x 160 crop would cut the anatomy at the edges, and ESPIRiT then finds a second set of
   maps near the edges (its well-known failure when the object extends beyond the FOV).
2. Coil maps: sigpy's analytic birdcage maps ``sigpy.mri.birdcage_maps((8, 160, 160), r=1.5, nzz=8)``
   (8 coils on a ring of radius 1.5 field-of-view units, sensitivity 1/distance with the azimuthal phase),
   normalised to :math:`\sum_c |S_c|^2 = 1` at every pixel; the same maps for both slices.
3. k-space: :math:`k_c = F(S_c x)` with the centred orthonormal 2-D FFT (fastMRI's ``fft2c``), no noise
   added (the knee image carries its own measurement noise).
4. Reference: ``reconstruction_rss`` = root-sum-of-squares of the coil images :math:`F^H k_c`, which equals
   :math:`|x|` because the maps are normalised.

Files (fastMRI's multi-coil layout, gzip-compressed):

* ``kspace/sim_knee_8coil.h5``: ``kspace`` complex64 ``[2, 8, 160, 160]``, ``reconstruction_rss`` float32
  ``[2, 160, 160]``, attributes ``acquisition`` = ``"simulated"``, ``max`` (of the RSS), ``norm`` (its
  Frobenius norm), ``simulation`` (this paragraph in short);
* ``maps/sim_knee_8coil.h5``: ``maps`` complex64 ``[8, 160, 160]``, the maps used (shared by the slices).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NUM_COILS = 8
SIZE = 160
CROP = 128  # each crop is CROP x CROP, zero-padded to SIZE x SIZE
CROPS = ((96, 96), (16, 96))  # (top, left) of each crop of the 320 x 320 slice
BIRDCAGE_RADIUS = 1.5
STEM = "sim_knee_8coil"
SOURCE = "fastmri_knee/eval/single_coil_001.npy"


def birdcage_maps(num_coils: int = NUM_COILS, size: int | tuple[int, int] = SIZE, radius: float = BIRDCAGE_RADIUS):
    """sigpy's birdcage maps ``[C, H, W]`` complex128, normalised to sum_c |S_c|^2 = 1."""
    import sigpy.mri

    h, w = (size, size) if isinstance(size, int) else size
    maps = sigpy.mri.birdcage_maps((num_coils, h, w), r=radius, nzz=num_coils, dtype=np.complex128)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes (as :func:`ccdf.operators.fft2c`)."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def simulate_sample(samples: Path) -> dict[str, np.ndarray]:
    """The sample's arrays (float64/complex128) from the bundled knee slice under ``samples``."""
    x = np.load(samples / SOURCE).astype(np.complex128)
    pad = (SIZE - CROP) // 2
    images = np.stack([np.pad(x[t : t + CROP, c : c + CROP], pad) for t, c in CROPS])  # [S, H, W]
    maps = birdcage_maps()
    kspace = fft2c(maps[None] * images[:, None])  # [S, C, H, W]
    rss = np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(1))
    return {"images": images, "maps": maps, "kspace": kspace, "reconstruction_rss": rss}


def write_sample(out: Path, samples: Path) -> tuple[Path, Path]:
    """Write the two HDF5 files of the sample under ``out`` (see the module docstring)."""
    import h5py

    arrays = simulate_sample(samples)
    gz = {"compression": "gzip", "compression_opts": 9, "shuffle": True}
    kspace_file = out / "kspace" / f"{STEM}.h5"
    maps_file = out / "maps" / f"{STEM}.h5"
    kspace_file.parent.mkdir(parents=True, exist_ok=True)
    maps_file.parent.mkdir(parents=True, exist_ok=True)
    rss = arrays["reconstruction_rss"].astype(np.float32)
    with h5py.File(kspace_file, "w") as f:
        f.create_dataset("kspace", data=arrays["kspace"].astype(np.complex64), **gz)
        f.create_dataset("reconstruction_rss", data=rss, **gz)
        f.attrs["acquisition"] = "simulated"
        f.attrs["max"] = float(rss.max())
        f.attrs["norm"] = float(np.linalg.norm(rss))
        f.attrs["simulation"] = (
            f"k_c = fft2c(S_c x): x = {CROP}x{CROP} crops (top, left) {CROPS} of {SOURCE} "
            f"zero-padded to {SIZE}x{SIZE}; S = sigpy.mri.birdcage_maps(({NUM_COILS}, {SIZE}, {SIZE}), "
            f"r={BIRDCAGE_RADIUS}, nzz={NUM_COILS}) normalised to sum |S_c|^2 = 1; no noise; ccdf.data.simulate"
        )
    with h5py.File(maps_file, "w") as f:
        f.create_dataset("maps", data=arrays["maps"].astype(np.complex64), **gz)
    return kspace_file, maps_file


def main(argv: list[str] | None = None) -> None:
    from ccdf.data.datasets import samples_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=samples_root() / "fastmri_knee_multicoil")
    args = parser.parse_args(argv)
    for path in write_sample(args.out, samples_root()):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
