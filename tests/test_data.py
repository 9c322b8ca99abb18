"""Data sets: conversions, sizes, bundled samples and clear errors that name the file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ccdf.data import ComplexSliceFolder, ImageFolder, bundled_samples, to_unit
from ccdf.data.datasets import UpscaledImageWarning
from ccdf.denoisers.gaussian import fit_stationary_prior
from ccdf.initializers import Bicubic, MaskedFill, PseudoInverse, Zero
from ccdf.operators import Inpainting, SingleCoilMRI, SuperResolution
from tests.helpers import ROOT


def test_image_folder_converts_and_crops(tmp_path):
    Image.new("RGBA", (100, 50), (255, 0, 0, 255)).save(tmp_path / "a.png")
    Image.new("L", (40, 40), 128).save(tmp_path / "b.png")
    Image.new("P", (64, 64)).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path, size=32)
    assert len(ds) == 3 and [ds[i]["name"] for i in range(3)] == ["a", "b", "c"]
    x = ds[0]["x0"]
    assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[0], torch.ones(32, 32)) and torch.testing.assert_close(x[1], -torch.ones(32, 32))
    assert ds[1]["x0"].shape == (3, 32, 32)
    assert ImageFolder(tmp_path, size=16, channels=1)[0]["x0"].shape == (1, 16, 16)
    assert len(ImageFolder(tmp_path, size=16, max_images=2)) == 2


def test_image_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .png"):
        ImageFolder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match="broken.png"):
        ds[0]


def test_complex_slices(tmp_path):
    arr = np.random.default_rng(0).normal(size=(40, 36)) + 1j * np.random.default_rng(1).normal(size=(40, 36))
    np.save(tmp_path / "s.npy", arr)
    np.save(tmp_path / "t.npy", np.abs(arr).astype(np.float32))
    ds = ComplexSliceFolder(tmp_path, size=32)
    x = ds[0]["x0"]
    assert x.dtype == torch.complex64 and x.shape == (1, 32, 32)
    assert float(x.abs().max()) == pytest.approx(1.0)
    assert ds[1]["x0"].imag.abs().max() == 0
    np.save(tmp_path / "u.npy", np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="u.npy"):
        ds2 = ComplexSliceFolder(tmp_path, size=32)
        ds2[2]
    (tmp_path / "v.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="v.npy"):
        ComplexSliceFolder(tmp_path, size=32)[3]


def test_bundled_samples_and_prior_split_are_disjoint():
    ev, pr = bundled_samples("ffhq", "eval"), bundled_samples("ffhq", "prior")
    assert len(ev) == 4 and len(pr) == 6
    assert not {ev[i]["name"] for i in range(4)} & {pr[i]["name"] for i in range(6)}
    knee = bundled_samples("fastmri_knee", "eval", size=320)
    assert knee[0]["x0"].dtype == torch.complex64
    with pytest.raises(ValueError, match="split"):
        bundled_samples("ffhq", "train")


def test_bundled_samples_equal_the_originals():
    """Every bundled file is its original: sha256 digests recorded from the shared data folder (source per row in
    tests/fixtures/bundled_samples_sha256.json); the one converted file (complex128 -> complex64) holds exactly the
    converted original array. The loader then returns the bundled pixels themselves."""
    record = json.loads((ROOT / "tests" / "fixtures" / "bundled_samples_sha256.json").read_text())
    root = ROOT / "ccdf" / "assets" / "samples"
    bundled = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".png", ".npy"))
    assert sorted(row["bundled"] for row in record["files"]) == bundled  # no bundled file without its record
    for row in record["files"]:
        path = root / row["bundled"]
        if "array_sha256" in row:
            arr = np.load(path)
            assert arr.dtype == np.dtype(row["array_dtype"]) and list(arr.shape) == row["array_shape"], path
            assert hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest() == row["array_sha256"], path
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"], path
    ev = bundled_samples("ffhq", "eval")
    with Image.open(root / "ffhq" / "eval" / "00000.png") as img:
        ref = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(to_unit(ev[0]["x0"]), ref)


def test_fitted_prior_reproduces_the_data_spectrum():
    """The stationary prior's pixel variance per decorrelated channel equals the data's."""
    data = bundled_samples("ffhq", "prior", size=64)
    prior = fit_stationary_prior(data)
    x = torch.stack([data[i]["x0"] for i in range(len(data))]).double()
    centred = x - prior.mean.reshape(1, -1, 1, 1)
    z = torch.einsum("dc,bdhw->bchw", prior.color_basis, centred)
    torch.testing.assert_close(prior.pixel_variance(64, 64), z.pow(2).mean(dim=(0, 2, 3)), rtol=1e-9, atol=0)
    # the periodogram itself, ring by ring, is followed closely (not only its total)
    per = torch.fft.fft2(z, norm="ortho").abs().pow(2).mean(0)
    model = prior.power(64, 64)
    low = torch.fft.fftfreq(64).abs()[:, None].expand(64, 64) + torch.fft.fftfreq(64).abs()[None] < 0.1
    assert float((per[:, low].sum(1) / model[:, low].sum(1) - 1).abs().max()) < 0.1
    s = prior.sample(64, 64, 64, torch.Generator().manual_seed(0))
    assert s.shape == (64, 3, 64, 64)
    assert abs(float(s.var()) / float(x.var()) - 1) < 0.2


def test_initializers():
    x = bundled_samples("ffhq", "eval", size=32)[0]["x0"][None]
    sr = SuperResolution(4)
    assert Bicubic()(sr(x), sr).shape == x.shape
    with pytest.raises(TypeError, match="SuperResolution"):
        Bicubic()(x, Inpainting.box(32, 8))
    op = Inpainting.box(32, 8)
    filled = MaskedFill()(op(x), op)
    assert torch.equal(op(filled), op(x))
    hole_err = lambda z: float(((z - x) * (1 - op.mask)).pow(2).sum())  # noqa: E731
    assert hole_err(filled) < hole_err(PseudoInverse()(op(x), op))
    mri = SingleCoilMRI.cartesian(32, 4, 0.08)
    xc = torch.complex(x[:, :1], torch.zeros_like(x[:, :1]))
    assert torch.equal(Zero()(mri(xc), mri), torch.zeros_like(xc))


def _write_h5(path, kspace):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)


def test_fastmri_hdf5_slices(tmp_path):
    from ccdf.data.datasets import FastMRISlices
    from ccdf.operators import fft2c

    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 40, 36)) + 1j * rng.normal(size=(4, 40, 36))
    kspace = fft2c(torch.from_numpy(images)).numpy().astype(np.complex64)
    _write_h5(tmp_path / "file1.h5", kspace)
    _write_h5(tmp_path / "file2.h5", kspace[:2])
    ds = FastMRISlices(tmp_path, size=32, edge_slices=1)
    assert len(ds) == 2 and [ds[i]["name"] for i in range(2)] == ["file1_001", "file1_002"]
    x = ds[0]["x0"]
    ref = torch.from_numpy(images[1, 4:36, 2:34]).to(torch.complex64)
    torch.testing.assert_close(x[0], ref / ref.abs().max(), atol=1e-5, rtol=1e-5)
    assert len(FastMRISlices(tmp_path, size=32)) == 6


def test_fastmri_errors_name_the_file(tmp_path):
    from ccdf.data.datasets import FastMRISlices

    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="broken.h5"):
        FastMRISlices(tmp_path)
    (tmp_path / "broken.h5").unlink()
    _write_h5(tmp_path / "nokspace.h5", np.zeros((2, 4, 4)))
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("reconstruction_esc", data=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="other.h5.*kspace"):
        FastMRISlices(tmp_path, size=4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .h5 files"):
        FastMRISlices(empty)


def test_split_files(tmp_path):
    for name in ("00000", "00001", "01000", "01001"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    eval_ds = ImageFolder(tmp_path, size=8, include="ffhq_eval.txt")  # the shipped split, by name
    train_ds = ImageFolder(tmp_path, size=8, exclude="ffhq_eval.txt")
    assert [f.stem for f in eval_ds.files] == ["00000", "00001"]
    assert [f.stem for f in train_ds.files] == ["01000", "01001"]
    with pytest.raises(FileNotFoundError, match="split file not found"):
        ImageFolder(tmp_path, size=8, include="nope.txt")
    (tmp_path / "only.txt").write_text("# nothing matches\n99999\n")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path, size=8, include=tmp_path / "only.txt")


def _png48(path, rgb: np.ndarray) -> None:
    """A minimal 16-bit-per-channel RGB PNG encoder (PIL cannot write one): IHDR (bit depth 16, colour
    type 2), one zlib IDAT of big-endian rows each with filter byte 0, IEND; CRC-32 per chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[r].astype(">u2").tobytes() for r in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_16bit_grayscale_png_loads_at_full_range_and_precision(tmp_path):
    """Values spanning 0..65535 map to [0, 1] (PIL's convert("L") used to clip everything above 255 to white)."""
    values = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    values[0, 0], values[7, 7], values[3, 4] = 0, 65535, 257  # both ends and one 16-bit step above 8-bit 1
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode == "I;16"  # what PIL makes of it
    expected = torch.from_numpy(values.astype(np.float64) / 65535)
    for channels in (1, 3):
        x = ImageFolder(tmp_path, size=8, channels=channels)[0]["x0"]
        assert x.shape == (channels, 8, 8)
        # float32 rounding of v / 65535 and of the map to [-1, 1] and back: a few ulp
        torch.testing.assert_close(to_unit(x).double(), expected.expand(channels, 8, 8), atol=1e-6, rtol=0)
    # resized in floating point: a black/white split keeps its ends (a 16 -> 8 downscale)
    split = np.zeros((16, 16), np.uint16)
    split[:, 8:] = 65535
    Image.fromarray(split).save(tmp_path / "g16.png")
    x = to_unit(ImageFolder(tmp_path, size=8, channels=1)[0]["x0"])
    assert float(x[0, :, 0].max()) < 1e-6 and float(x[0, :, -1].min()) > 1 - 1e-6


def test_16bit_rgb_png_loads_at_full_range_8bit_precision(tmp_path):
    """What holds for 48-bit RGB PNGs: PIL decodes them at 8 bits per channel, the high byte (v >> 8),
    so the full range maps to [0, 1] (65535 -> 1) with 8-bit precision."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, size=(8, 8, 3)).astype(np.uint16)
    rgb[0, 0], rgb[0, 1] = (0, 65535, 32768), (65535, 0, 257)
    _png48(tmp_path / "c48.png", rgb)
    x = to_unit(ImageFolder(tmp_path, size=8)[0]["x0"])
    expected = torch.from_numpy((rgb >> 8).astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)  # x / 255 through [-1, 1] and back: float32 rounding
    assert float(x.min()) == 0 and float(x.max()) == 1


def test_float_images_are_refused_with_the_file_name(tmp_path):
    Image.new("F", (8, 8), 0.5).save(tmp_path / "float.png", format="TIFF")  # PIL reads by content, not name
    with pytest.raises(ValueError, match=r"float.png: unsupported image mode F"):
        ImageFolder(tmp_path, size=8)[0]


def test_upscaling_tiny_images_warns_with_file_and_factor(tmp_path):
    Image.new("RGB", (5, 4), (200, 10, 10)).save(tmp_path / "tiny.png")
    with pytest.warns(UpscaledImageWarning, match=r"tiny.png: 5x4 image upscaled 32.0x to 128x128"):
        ImageFolder(tmp_path, size=128)[0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UpscaledImageWarning)
        ImageFolder(tmp_path, size=8)[0]  # 2.0x: at the threshold, no warning
        ImageFolder(tmp_path, size=3)[0]  # downscaling: no warning


def test_non_finite_and_all_zero_mri_data_name_the_file_and_slice(tmp_path):
    """NaN / inf used to pass (a NaN-filled slice normalised to NaN, and the run ended with NaN metrics);
    the all-zero error did not say which file."""
    from ccdf.data.datasets import FastMRISlices

    nan = np.where(np.eye(8) > 0, np.nan, 1).astype(np.complex64)
    for name, arr, count in (("nan", nan, 8), ("inf", np.full((8, 8), -np.inf, np.float32), 64)):
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / f"{name}.npy", arr)
        with pytest.raises(ValueError, match=rf"MRI slice .*{name}.npy: {count} of 64 values are NaN or infinite"):
            ComplexSliceFolder(folder, size=8)[0]
    (tmp_path / "zero").mkdir()
    np.save(tmp_path / "zero" / "zero.npy", np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match=r"MRI slice .*zero.npy: all-zero image"):
        ComplexSliceFolder(tmp_path / "zero", size=8)[0]
    kspace = np.ones((3, 8, 8), np.complex64)
    kspace[1, 2, 2] = np.nan
    kspace[2] = 0
    (tmp_path / "h5").mkdir()
    _write_h5(tmp_path / "h5" / "vol.h5", kspace)
    ds = FastMRISlices(tmp_path / "h5", size=8)
    assert ds[0]["x0"].shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"slice 1 of fastMRI file .*vol.h5: 1 of 64 values are NaN or infinite"):
        ds[1]
    with pytest.raises(ValueError, match=r"slice 2 of fastMRI file .*vol.h5: all-zero image"):
        ds[2]
