"""Data sets: conversions, sizes, bundled samples and clear errors that name the file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ccdf.data import ComplexSliceFolder, ImageFolder, bundled_samples, to_unit
from ccdf.denoisers.gaussian import fit_stationary_prior
from ccdf.initializers import Bicubic, MaskedFill, PseudoInverse, Zero
from ccdf.operators import Inpainting, SingleCoilMRI, SuperResolution
from tests.conftest import ROOT


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
