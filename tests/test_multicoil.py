"""Multi-coil (SENSE) MRI: the operator against dense linear algebra and deepinv, ESPIRiT on the bundled
simulated sample, the fastMRI multi-coil reader and its errors, and ``task=mri_multicoil`` end to end.

The operator's contract (adjointness, pinv, projection, prox) runs with every other operator in
tests/test_operators.py (``mc_*``, ``coil_kspace``) and tests/test_solvers.py (``multicoil_*``).
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch

from ccdf.data.datasets import FastMRIMultiCoil, bundled_multicoil, samples_root
from ccdf.operators import CoilKSpace, MultiCoilMRI, cartesian_mask, fft2c, ifft2c, poisson_mask, rss, sense_combine
from tests.helpers import app_cfg, gen, periodic_cov


def random_maps(shape, seed: int, offset: float = 1.5) -> torch.Tensor:
    """Random complex maps normalised to sum_c |S_c|^2 = 1 (float64)."""
    g = gen(seed)
    maps = torch.complex(
        torch.randn(shape, dtype=torch.float64, generator=g), torch.randn(shape, dtype=torch.float64, generator=g)
    )
    maps = maps + offset
    return maps / maps.abs().pow(2).sum(-3, keepdim=True).sqrt()


def crandn(shape, seed: int) -> torch.Tensor:
    g = gen(seed)
    return torch.complex(
        torch.randn(shape, dtype=torch.float64, generator=g), torch.randn(shape, dtype=torch.float64, generator=g)
    )


def dense_matrix(op: MultiCoilMRI, h: int, w: int) -> torch.Tensor:
    """A as a dense [C*H*W, H*W] complex matrix (columns: A applied to the pixel basis)."""
    eye = torch.eye(h * w, dtype=torch.complex128).reshape(h * w, 1, h, w)
    return op(eye).reshape(h * w, -1).T


# ---------------------------------------------------------------------------------------------------------
# The operator: exact answers from dense linear algebra; deepinv's MultiCoilMRI
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["columns", "poisson"])
def test_pinv_project_prox_equal_dense_linear_algebra(mask_kind):
    """pinv = numpy-style pseudo-inverse of the dense A, project = x + A^+(y - A x), prox = (A^H A + lam I)^-1
    (A^H y + lam x), in float64. Columns: the exact per-row solve; Poisson disc: conjugate gradients. The maps
    vanish on two columns (a null space of A), so the minimum-norm property is exercised too."""
    h = w = 8
    mask = cartesian_mask(w, 2, 0.25, seed=3) if mask_kind == "columns" else poisson_mask(8, 2, 2, seed=0)
    maps = random_maps((3, h, w), 1)
    maps[:, :, :2] = 0
    op = MultiCoilMRI(mask, maps, (h, w))
    assert op.decouples == (mask_kind == "columns")
    a = dense_matrix(op, h, w)
    x, r = crandn((2, 1, h, w), 2), crandn((2, 1, h, w), 3)
    y = op(r)
    y_flat = y.reshape(2, -1).T
    a_pinv = torch.linalg.pinv(a, rtol=1e-10)
    want_pinv = (a_pinv @ y_flat).T.reshape(2, 1, h, w)
    torch.testing.assert_close(op.pinv(y), want_pinv, rtol=0, atol=1e-9)
    x_flat = x.reshape(2, -1).T
    want_proj = (x_flat + a_pinv @ (y_flat - a @ x_flat)).T.reshape(2, 1, h, w)
    torch.testing.assert_close(op.project(x, y), want_proj, rtol=0, atol=1e-9)
    for lam in (0.05, 3.0):
        normal = a.mH @ a + lam * torch.eye(h * w, dtype=a.dtype)
        want = torch.linalg.solve(normal, a.mH @ y_flat + lam * x_flat).T.reshape(2, 1, h, w)
        torch.testing.assert_close(op.prox(x, y, lam), want, rtol=0, atol=1e-9)
    # the adjoint is the conjugate transpose of the dense matrix
    torch.testing.assert_close(op.adjoint(y).reshape(2, -1).T, a.mH @ y_flat, rtol=0, atol=1e-12)


def test_forward_is_the_sense_model_and_the_example_holds():
    """y_c = M fft2c(S_c x): checked coil by coil against the single-coil transform; full sampling with
    normalised maps makes A^H A the identity and A^+ = A^H."""
    maps = random_maps((4, 12, 10), 5)
    x = crandn((3, 1, 12, 10), 6)
    mask = poisson_mask((12, 10), 2, 2, seed=4)
    op = MultiCoilMRI(mask, maps)
    for c in range(4):
        torch.testing.assert_close(op(x)[:, c], mask * fft2c(maps[c] * x[:, 0]), rtol=0, atol=1e-12)
    full = MultiCoilMRI(torch.ones(12, 10), maps)
    torch.testing.assert_close(full.adjoint(full(x)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(full.pinv(full(x)), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(full.combine(full.coil_images(x)), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(rss(full.coil_images(x)), x.abs(), rtol=0, atol=1e-12)  # |x| when sum |S|^2 = 1


def test_agrees_with_deepinv_multicoil_mri():
    """deepinv.physics.MultiCoilMRI (test-only dependency) with the same mask and maps gives the same A, A^H and,
    for a full-rank problem, the same least-squares A^+ (its CG ``A_dagger``, to its CG's accuracy).

    Mapping: deepinv images are real [B, 2, H, W] (Re, Im) and k-space [B, 2, C, H, W]; ours are complex
    [B, 1, H, W] and [B, C, H, W] (``torch.view_as_real`` moves the 2 to the end; deepinv puts it at dim 1).
    Both use the centred orthonormal FFT (ifftshift, fft2 norm="ortho", fftshift), so no scale or shift is
    needed; deepinv's mask [1, 2, H, W] is our mask repeated for Re and Im.
    """
    deepinv = pytest.importorskip("deepinv")
    h, w = 16, 12
    maps = random_maps((2, 5, h, w), 8).to(torch.complex128)  # one set per image
    mask = cartesian_mask(w, 2, 0.25, seed=1)
    ours = MultiCoilMRI(mask, maps, (h, w))
    theirs = deepinv.physics.MultiCoilMRI(mask=mask[None].expand(h, w).double(), coil_maps=maps, img_size=(h, w))
    x = crandn((2, 1, h, w), 9)
    to_dinv_img = lambda v: torch.view_as_real(v[:, 0]).moveaxis(-1, 1)  # noqa: E731 [B,1,H,W] c -> [B,2,H,W]
    to_dinv_ksp = lambda v: torch.view_as_real(v).moveaxis(-1, 1)  # noqa: E731 [B,C,H,W] c -> [B,2,C,H,W]
    y = ours(x)
    torch.testing.assert_close(theirs.A(to_dinv_img(x)), to_dinv_ksp(y), rtol=0, atol=1e-12)
    v = crandn((2, 5, h, w), 10)
    torch.testing.assert_close(theirs.A_adjoint(to_dinv_ksp(v)), to_dinv_img(ours.adjoint(v)), rtol=0, atol=1e-12)
    # A has full column rank here: A^+ A x = x. Ours is exact; deepinv's CG (A_dagger) stops within 6e-5 of it
    # (measured; 2e-5 with 5000 iterations), hence its tolerance.
    torch.testing.assert_close(ours.pinv(y), x, rtol=0, atol=1e-12)
    dagger = theirs.A_dagger(to_dinv_ksp(y), max_iter=500, tol=1e-12)
    torch.testing.assert_close(dagger, to_dinv_img(ours.pinv(y)), rtol=0, atol=2e-4)
    # and with a 2-D Poisson-disc mask (our CG path)
    mask2 = poisson_mask((h, w), 2, 4, seed=2)
    ours2 = MultiCoilMRI(mask2, maps)
    theirs2 = deepinv.physics.MultiCoilMRI(mask=mask2.double(), coil_maps=maps, img_size=(h, w))
    torch.testing.assert_close(theirs2.A(to_dinv_img(x)), to_dinv_ksp(ours2(x)), rtol=0, atol=1e-12)
    torch.testing.assert_close(theirs2.A_adjoint(to_dinv_ksp(v)), to_dinv_img(ours2.adjoint(v)), rtol=0, atol=1e-12)


def test_per_image_parameters_for_batch_and_select():
    """Maps that come with the batch make a batched operator; select() takes items' maps and reuses the per-row
    factorization; every item's result equals the operator built for it alone."""
    maps = random_maps((3, 4, 8, 8), 11)
    mask = cartesian_mask(8, 2, 0.25, seed=0)
    template = MultiCoilMRI.cartesian(8, 2, 0.25, seed=0)
    assert template.maps is None
    with pytest.raises(ValueError, match="no coil maps"):
        template(torch.zeros(1, 1, 8, 8, dtype=torch.complex128))
    with pytest.raises(ValueError, match="carry none"):
        template.for_batch({"x0": torch.zeros(1, 1, 8, 8)}, [])
    with pytest.raises(ValueError, match="dataset.size"):
        template.for_batch({"maps": random_maps((1, 4, 6, 6), 1)}, [])
    op = template.for_batch({"maps": maps, "x0": torch.zeros(3, 1, 8, 8)}, [])
    x = crandn((3, 1, 8, 8), 12)
    y = op(x)
    p = op.project(torch.zeros_like(x), y)
    sub = op.select([2, 0])
    assert sub._eig is not None and sub._eig[0].shape[0] == 2  # shared, not recomputed
    torch.testing.assert_close(sub.project(torch.zeros_like(x[[2, 0]]), y[[2, 0]]), p[[2, 0]], rtol=0, atol=1e-12)
    for b in range(3):
        alone = MultiCoilMRI(mask, maps[b])
        torch.testing.assert_close(alone(x[b : b + 1]), y[b : b + 1], rtol=0, atol=0)
        torch.testing.assert_close(
            alone.project(torch.zeros_like(x[:1]), y[b : b + 1]), p[b : b + 1], rtol=0, atol=1e-12
        )
    with pytest.raises(ValueError, match="3 images but the batch has 2"):
        op(x[:2])


def test_coil_kspace_is_per_coil_single_coil_mri():
    """CoilKSpace on C coil images is SingleCoilMRI applied to each (the SSOS sampler's operator)."""
    from ccdf.operators import SingleCoilMRI

    mask = cartesian_mask(8, 2, 0.25, seed=0)
    ours, single = CoilKSpace(mask, 8), SingleCoilMRI(mask, 8)
    c, z = crandn((2, 3, 8, 8), 1), crandn((2, 3, 8, 8), 2)
    y = ours(c)
    for k in range(3):
        torch.testing.assert_close(y[:, k : k + 1], single(c[:, k : k + 1]), rtol=0, atol=0)
        torch.testing.assert_close(ours.project(z, y)[:, k : k + 1], single.project(z[:, k : k + 1], y[:, k : k + 1]))
    assert MultiCoilMRI(mask, random_maps((3, 8, 8), 0)).coil_operator().mask.shape == ours.mask.shape


def test_sense_combine_inverts_coil_images_and_handles_empty_support():
    maps = random_maps((4, 6, 6), 3)
    maps[:, 0] = 0
    x = crandn((1, 1, 6, 6), 4)
    got = sense_combine(maps * x, maps)
    torch.testing.assert_close(got[..., 1:, :], x[..., 1:, :], rtol=0, atol=1e-12)
    assert bool((got[..., 0, :] == 0).all())


# ---------------------------------------------------------------------------------------------------------
# The bundled simulated sample and ESPIRiT
# ---------------------------------------------------------------------------------------------------------

SAMPLE = samples_root() / "fastmri_knee_multicoil"


@pytest.fixture(scope="module")
def simulated() -> dict:
    """``ccdf.data.simulate.simulate_sample`` of the bundled knee slices, computed once for this module (read only)."""
    from ccdf.data.simulate import simulate_sample

    return simulate_sample(samples_root())


def test_bundled_sample_is_its_documented_simulation(simulated):
    """The bundled files hold what ccdf.data.simulate computes (k_c = fft2c(S_c x) from the bundled knee slice with
    normalised birdcage maps), stored as complex64/float32: equal to float32 rounding (atol 1e-6 on values of
    magnitude <= 1 in the images, 2e-5 in k-space, whose DC terms reach ~60; FFTs and sigpy's maps use sin/cos,
    whose last bits differ across CPUs)."""
    want = simulated
    with h5py.File(SAMPLE / "kspace" / "sim_knee_8coil.h5", "r") as f:
        assert f["kspace"].shape == (2, 8, 160, 160) and f["kspace"].dtype == np.complex64
        np.testing.assert_allclose(f["kspace"][()], want["kspace"], rtol=0, atol=2e-5)
        np.testing.assert_allclose(f["reconstruction_rss"][()], want["reconstruction_rss"], rtol=0, atol=1e-6)
        assert f.attrs["acquisition"] == "simulated"
    with h5py.File(SAMPLE / "maps" / "sim_knee_8coil.h5", "r") as f:
        np.testing.assert_allclose(f["maps"][()], want["maps"], rtol=0, atol=1e-6)
    # the reference is |x| (normalised maps), and the data set's x0 is x itself (exact maps)
    np.testing.assert_allclose(want["reconstruction_rss"], np.abs(want["images"]), rtol=0, atol=1e-12)
    item = bundled_multicoil(maps="file")[1]
    np.testing.assert_allclose(item["x0"][0].numpy(), want["images"][1] / want["reconstruction_rss"][1].max(), rtol=0,
                               atol=1e-6)  # fmt: skip
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*.h5"))
    assert total < 5e6, total


@pytest.mark.e2e  # ESPIRiT on two 160x160 slices, about 15 s (make test-e2e)
def test_espirit_maps_reproduce_the_simulated_maps(simulated):
    """ESPIRiT (sigpy's EspiritCalib, 24 x 24 calibration square) on the bundled simulated k-space recovers the
    birdcage maps up to a phase per pixel (ESPIRiT's S_hat = S conj(phi), phi = the phase of <S_hat, S>, close
    to coil 0's phase, which sigpy removes): inside the ESPIRiT support (it misses 1 object pixel at a crop
    corner), |<S_hat, S>| >= 0.995 at every object pixel and >= 0.9999 on average (measured: min 0.9996 /
    0.9984, mean 0.99999 / 0.99998 on the two slices), and the SENSE reconstruction (A^+ of the fully sampled
    coil k-space with the estimated maps, and the data set's x0) equals the truth times phi to 1e-3 relative
    error (measured: 2.2e-5 / 2.8e-5; the object lies inside the field of view, see ccdf/data/simulate.py)."""
    truth = simulated
    maps_true = torch.from_numpy(truth["maps"])
    data = bundled_multicoil(maps="espirit")
    for k in range(2):
        item = data[k]
        maps = item["maps"].to(torch.complex128)
        support = maps.abs().pow(2).sum(0) > 0
        obj = torch.from_numpy(np.abs(truth["images"][k])) > 0.02
        assert float((obj & ~support).double().mean()) < 1e-3  # the support covers the object
        inside = obj & support
        inner = (maps.conj() * maps_true).sum(0)
        assert float(inner.abs()[inside].min()) >= 0.995 and float(inner.abs()[inside].mean()) >= 0.9999
        phi = inner / inner.abs().clamp(min=1e-30)
        x_true = torch.from_numpy(truth["images"][k]) / float(truth["reconstruction_rss"][k].max())
        x_sense = item["x0"][0].to(torch.complex128)
        err = (x_sense - x_true * phi)[inside].norm() / x_true[inside].norm()
        assert float(err) < 1e-3, float(err)
        # the reconstruction with the estimated maps: A^+ of the fully sampled coil k-space
        op = MultiCoilMRI(torch.ones(160, 160), maps)
        peak = float(truth["reconstruction_rss"][k].max())
        x_pinv = op.pinv(torch.from_numpy(truth["kspace"][k] / peak)[None])[0, 0]
        err = (x_pinv - x_true * phi)[inside].norm() / x_true[inside].norm()
        assert float(err) < 1e-3, float(err)
        # not vacuous: the 160 x 160 crop without the zero border (object beyond the FOV) fails this bound
    x = np.load(samples_root() / "fastmri_knee" / "eval" / "single_coil_001.npy").astype(np.complex128)[80:240, 80:240]
    from ccdf.data.datasets import espirit_maps
    from ccdf.data.simulate import fft2c as np_fft2c

    kspace = np_fft2c(truth["maps"] * x)
    maps = torch.from_numpy(espirit_maps(kspace)).to(torch.complex128)
    inner = (maps.conj() * maps_true).sum(0)
    assert float(inner.abs().min()) < 0.5


# ---------------------------------------------------------------------------------------------------------
# The fastMRI multi-coil reader
# ---------------------------------------------------------------------------------------------------------


def write_volume(path, kspace, rss_ref=None, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if kspace is not None:
            f.create_dataset("kspace", data=kspace)
        if rss_ref is not None:
            f.create_dataset("reconstruction_rss", data=rss_ref)
        for key, value in extra.items():
            f.create_dataset(key, data=value)
    return path


def test_reader_crops_combines_and_scales(tmp_path):
    """A volume at 24 x 20 read at size 16: coil images centre-cropped, x0 = SENSE combination with the file's maps
    (given at the k-space's size, cropped like the images), ref = reconstruction_rss cropped, both / max(ref)."""
    maps = random_maps((3, 24, 20), 20)
    x = crandn((2, 1, 24, 20), 21)
    kspace = fft2c(maps[None] * x).to(torch.complex64).numpy()
    ref = (rss(ifft2c(torch.from_numpy(kspace)))[:, 0]).numpy().astype(np.float32)
    write_volume(tmp_path / "data" / "vol.h5", kspace, ref)
    with h5py.File(write_volume(tmp_path / "maps" / "vol.h5", None), "a") as f:
        f.create_dataset("maps", data=maps.to(torch.complex64).numpy())
    data = FastMRIMultiCoil(tmp_path / "data", size=16, maps=tmp_path / "maps")
    assert len(data) == 2
    item = data[1]
    top, left = 4, 2
    crop = x[1, 0, top : top + 16, left : left + 16]
    peak = float(crop.abs().max())
    torch.testing.assert_close(item["ref"][0].double(), crop.abs() / peak, rtol=0, atol=1e-5)
    torch.testing.assert_close(item["x0"][0].to(torch.complex128), crop / peak, rtol=0, atol=1e-5)
    torch.testing.assert_close(item["maps"], maps[:, top : top + 16, left : left + 16].to(torch.complex64))
    assert item["name"] == "vol_001" and item["index"] == 1


def test_reader_errors_name_the_file_and_shapes(tmp_path):
    """A file without `kspace`, single-coil k-space, and coil maps whose shape does not match the k-space are
    refused when the data set is built (before any sampling), naming the file and the shapes."""
    good = np.zeros((2, 3, 16, 16), dtype=np.complex64)
    bad = write_volume(tmp_path / "nokspace" / "a.h5", None, reconstruction_rss=np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match=rf"{bad}.*no 'kspace' dataset \(keys: \['reconstruction_rss'\]\)"):
        FastMRIMultiCoil(bad.parent, size=16, calib_width=8)
    single = write_volume(tmp_path / "single" / "a.h5", np.zeros((2, 16, 16), np.complex64))
    with pytest.raises(
        ValueError, match=r"expected multi-coil k-space \[slices, coils, H, W\], got shape \(2, 16, 16\)"
    ):
        FastMRIMultiCoil(single.parent, size=16, calib_width=8)
    vol = write_volume(tmp_path / "data" / "v.h5", good)
    for maps_shape in [(4, 16, 16), (2, 3, 12, 16), (3, 3, 16, 16)]:
        maps_dir = tmp_path / f"maps_{'x'.join(map(str, maps_shape))}"
        write_volume(maps_dir / "v.h5", None, maps=np.ones(maps_shape, np.complex64))
        with pytest.raises(ValueError) as err:
            FastMRIMultiCoil(vol.parent, size=16, maps=maps_dir)
        msg = str(err.value)
        assert str(maps_dir / "v.h5") in msg and str(maps_shape) in msg and "(2, 3, 16, 16)" in msg, msg
    with pytest.raises(ValueError, match="coil-map folder not found"):
        FastMRIMultiCoil(vol.parent, size=16, maps=tmp_path / "nowhere")
    ok = tmp_path / "maps_ok"
    write_volume(ok / "v.h5", None, maps=np.ones((3, 16, 16), np.complex64))
    assert len(FastMRIMultiCoil(vol.parent, size=16, maps=ok)) == 2
    write_volume(tmp_path / "data" / "w.h5", good)  # a volume without its maps file
    with pytest.raises(ValueError, match=rf"cannot read the coil maps {ok / 'w.h5'} of {vol.parent / 'w.h5'}"):
        FastMRIMultiCoil(vol.parent, size=16, maps=ok)
    with pytest.raises(ValueError, match="smaller than dataset.size=32"):
        FastMRIMultiCoil(vol.parent, size=32)
    with pytest.raises(ValueError, match=r"calib_width must be an integer in \[2, size=16\], got 24"):
        FastMRIMultiCoil(vol.parent, size=16)


# ---------------------------------------------------------------------------------------------------------
# The app: task=mri_multicoil, and errors that stop it before sampling
# ---------------------------------------------------------------------------------------------------------


def test_task_mri_multicoil_runs_and_scores_against_the_rss(tmp_path):
    """In process, small (64 x 64 crops, exact maps from the file, 4 steps): metrics.json with PSNR/SSIM/NMSE on
    magnitudes against the RSS reference, a grid, the reconstructions; the initializer's PSNR is A^+ y's,
    recomputed here from the data set and the operator."""
    import ccdf.app as app
    from ccdf.metrics import psnr

    cfg = app_cfg(tmp_path, "task=mri_multicoil", "debug=smoke", "dataset.maps=file", "sampler.num_steps=20",
                  "eval.fid=false", "eval.lpips=false")  # fmt: skip
    assert math.isfinite(app.main(cfg))
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["nfe"] == 8
    assert {"psnr", "ssim", "nmse", "init_psnr", "init_ssim", "init_nmse"} <= set(metrics)
    assert (run / "grid.png").is_file() and len(list((run / "recon").glob("*.npy"))) == 2
    data = bundled_multicoil(maps="file", size=64)
    op = MultiCoilMRI.cartesian(64, 4, 0.15, seed=0)
    for b, row in enumerate(metrics["per_image"]):
        item = data[b]
        op_b = op.for_batch({"maps": item["maps"][None]}, [])
        x_init = op_b.pinv(op_b(item["x0"][None]))
        want = float(psnr(x_init.abs(), item["ref"][None], item["ref"].max()))
        assert abs(row["init_psnr"] - want) < 1e-3, (row["init_psnr"], want)
        assert row["dc_residual"] < 1e-5  # exact SENSE data consistency at t = 0


def test_multicoil_data_errors_stop_the_run_before_sampling(tmp_path, monkeypatch):
    """A multi-coil file without kspace, and maps whose shape does not match the k-space, stop `main` with the
    reader's message, before the sampler runs, leaving no run folder and no cached result."""
    from hydra.errors import InstantiationException

    import ccdf.app as app
    import ccdf.sampling

    def no_sampling(*args, **kwargs):
        raise AssertionError("the sampler ran")

    monkeypatch.setattr(ccdf.sampling, "sample_ccdf", no_sampling)
    data = tmp_path / "data"
    write_volume(data / "v.h5", None, reconstruction_rss=np.zeros((1, 64, 64), np.float32))
    maps = tmp_path / "maps"
    write_volume(maps / "v.h5", None, maps=np.ones((4, 64, 64), np.complex64))
    cases = [([], f"cannot read fastMRI multi-coil file {data / 'v.h5'}: no 'kspace' dataset")]
    for overrides, message in cases + [([f"dataset.maps={maps}"], "does not match the k-space (1, 3, 64, 64)")]:
        if overrides:  # now a file with k-space, and maps of 4 coils for its 3
            write_volume(data / "v.h5", np.ones((1, 3, 64, 64), np.complex64))
        cfg = app_cfg(tmp_path, "task=mri_multicoil", "dataset=fastmri_multicoil", f"dataset.root={data}",
                      "dataset.size=64", "dataset.edge_slices=0", *overrides)  # fmt: skip
        with pytest.raises((ValueError, InstantiationException)) as err:  # Hydra wraps the reader's ValueError
            app.main(cfg)
        assert message in str(err.value)
        assert not (tmp_path / "run").exists() and not list((tmp_path / "cache").rglob("*.json"))


# ---------------------------------------------------------------------------------------------------------
# score-MRI's coil-by-coil samplers: SSOS and hybrid (ccdf.sampling.multicoil)
# ---------------------------------------------------------------------------------------------------------


def small_problem(seed: int = 0):
    """8 x 8 images, 3 coils, x2 column mask, a dense Gaussian prior on [1, 8, 8] (exact denoiser), VP schedule."""
    from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
    from ccdf.schedules import DiscreteVP

    n = 8
    cov = torch.kron(periodic_cov(n), periodic_cov(n))
    prior = DenseGaussianPrior(torch.zeros(n * n, dtype=torch.float64), cov, (1, n, n))
    schedule = DiscreteVP.linear(1000)
    op = MultiCoilMRI(cartesian_mask(n, 2, 0.25, seed=1), random_maps((2, 3, n, n), 30), n)
    x0 = crandn((2, 1, n, n), seed) * 0.5
    return GaussianDenoiser(prior, schedule), schedule, op, x0


def test_per_coil_denoiser_runs_the_prior_on_each_coil_and_counts_it():
    from ccdf.denoisers import CountingDenoiser
    from ccdf.sampling.multicoil import PerCoilDenoiser

    den, schedule, op, x0 = small_problem()
    counter = CountingDenoiser(den)
    wrapped = PerCoilDenoiser(counter)
    coils = op.coil_images(x0)
    t = torch.full((2,), 0.3, dtype=torch.float64)
    wrapped.set_items([0, 1], 2)
    out = wrapped(coils, t)
    for c in range(3):
        torch.testing.assert_close(out[:, c : c + 1], den(coils[:, c : c + 1], t), rtol=0, atol=0)
    assert counter.per_item == [3, 3]  # one network evaluation per coil and item


def last_state(states):
    def callback(info):
        states.append(info.x.clone())

    return callback


def test_ssos_keeps_coils_independent_and_each_consistent():
    """SSOS: each coil image is its own problem. With the same noise, changing coil 2's measurement changes only
    coil 2's result; the final coil images satisfy each coil's data exactly (VP, sigma(0) = 0); the output is their
    RSS (or their SENSE combination); NFE is C per step and item."""
    from ccdf.denoisers import CountingDenoiser
    from ccdf.sampling.multicoil import sample_ssos
    from ccdf.utils.rng import per_sample_generators

    den, schedule, op, x0 = small_problem()
    y = op(x0)
    x_init = op.pinv(y)
    kw = dict(t0=0.3, num_steps=20, step="ddpm")

    def run(y_, **extra):
        states: list[torch.Tensor] = []
        counter = CountingDenoiser(den)
        out = sample_ssos(counter, schedule, op, y_, x_init, generator=per_sample_generators(0, [0, 1]),
                          callback=last_state(states), **kw, **extra)  # fmt: skip
        return out, states[-1], counter

    out, coils, counter = run(y)
    assert coils.shape == (2, 3, 8, 8)
    torch.testing.assert_close(op.coil_operator()(coils), y, rtol=0, atol=1e-10)
    torch.testing.assert_close(out, torch.complex(rss(coils), torch.zeros_like(rss(coils))), rtol=0, atol=0)
    assert counter.per_item == [3 * 6, 3 * 6]  # N' = 6 steps, 3 coils
    y2 = y.clone()
    y2[:, 2] = y2[:, 2] * 1.5
    _, coils2, _ = run(y2)
    torch.testing.assert_close(coils2[:, :2], coils[:, :2], rtol=0, atol=0)
    assert float((coils2[:, 2] - coils[:, 2]).abs().max()) > 1e-3
    # hybrid: the SENSE step couples the coils (coil 2's data now moves the others)
    _, h1, _ = run(y, sense_every=1)
    _, h2, _ = run(y2, sense_every=1)
    assert float((h2[:, :2] - h1[:, :2]).abs().max()) > 1e-3
    sense, _, _ = run(y, combine="sense")
    torch.testing.assert_close(sense, op.combine(coils), rtol=0, atol=1e-12)


def test_sense_step_is_landweber_on_the_combined_image():
    """For coil images that follow the maps (c = S rho), sense_step is rho + lam A^H (y - A rho) written back through
    the maps (exact), and repeating it (Landweber) converges to the projection of rho onto {A rho = y}: after 300
    steps the residual is 1e-5 of ||y|| (measured), the distance to the projection 1e-5 of ||rho||."""
    _, _, op, x0 = small_problem()
    y = op(x0)
    coil_op = op.coil_operator()
    rho = crandn((2, 1, 8, 8), 5)
    for lam in (1.0, 0.3):
        got = coil_op.sense_step(op.coil_images(rho), y, lam)
        want = op.coil_images(rho + lam * op.adjoint(y - op(rho)))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    c = op.coil_images(rho)
    residuals = []
    for _ in range(300):
        c = coil_op.sense_step(c, y, 1.0)
        residuals.append(float((op(op.combine(c)) - y).abs().norm()))
    assert all(b <= a + 1e-12 for a, b in zip(residuals, residuals[1:]))  # Landweber with lam < 2 / ||A||^2
    assert residuals[-1] < 1e-4 * float(y.abs().norm())
    torch.testing.assert_close(op.combine(c), op.project(rho, y), rtol=0, atol=1e-4 * float(rho.abs().max()))


def test_hybrid_sense_step_schedule():
    """The SENSE step comes after the predictor (not the corrector) of every m-th step of the full grid, counted
    from t = 1, with lambda linear in t from 1.0 (t = 1) to 0.2 (t = 0), evaluated at the new level s."""
    from ccdf.sampling.conditioning import NoConditioning, Problem
    from ccdf.sampling.multicoil import SenseStep

    calls = []

    class Recorder(CoilKSpace):
        def sense_step(self, c, y, lam):
            calls.append(round(lam, 12))
            return c

    cond = SenseStep(NoConditioning(), every=3, num_steps=10)
    problem = Problem(Recorder(torch.ones(4, 4)), torch.zeros(1, 1, 4, 4, dtype=torch.complex128))
    x = torch.zeros(1, 1, 4, 4, dtype=torch.complex128)
    for k in range(10, 0, -1):
        t, s = torch.tensor(k / 10, dtype=torch.float64), torch.tensor((k - 1) / 10, dtype=torch.float64)
        cond.step(x, x, x, t, t, problem, None)  # a corrector step: never
        cond.step(x, x, x, t, s, problem, None)
    # steps 0, 3, 6, 9 of the grid: t = 1.0, 0.7, 0.4, 0.1 -> s = 0.9, 0.6, 0.3, 0.0
    assert calls == [round(1.0 - 0.8 * (1 - s), 12) for s in (0.9, 0.6, 0.3, 0.0)]
    with pytest.raises(ValueError, match="sense_every"):
        SenseStep(NoConditioning(), every=0, num_steps=10)
    with pytest.raises(ValueError, match="sense_lambda"):
        SenseStep(NoConditioning(), every=1, num_steps=10, lambdas=(0.0, 0.2))


def test_ssos_refuses_a_single_coil_operator():
    from ccdf.operators import SingleCoilMRI
    from ccdf.sampling.multicoil import sample_ssos

    den, schedule, _, x0 = small_problem()
    op = SingleCoilMRI(cartesian_mask(8, 2, 0.25, seed=1), 8)
    with pytest.raises(TypeError, match="operator=mri_multicoil"):
        sample_ssos(den, schedule, op, op(x0), op.pinv(op(x0)), t0=0.2, num_steps=10)


def test_ssos_sampler_runs_in_the_app_and_counts_every_coil(tmp_path):
    """sampler=ssos through the app (in process, small): NFE = coils x evaluations per step x N' = 8 x 2 x 4."""
    import ccdf.app as app

    cfg = app_cfg(tmp_path, "task=mri_multicoil", "sampler=ssos", "debug=smoke", "dataset.maps=file",
                  "dataset.max_images=1", "sampler.num_steps=20", "eval.fid=false", "eval.lpips=false")  # fmt: skip
    assert math.isfinite(app.main(cfg))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["nfe"] == 64 and metrics["num_images"] == 1


def test_one_cartesian_constructor_for_single_and_multi_coil():
    """SingleCoilMRI.cartesian and MultiCoilMRI.cartesian share one constructor (CartesianColumns): the same
    column mask of the image width for the same settings, square or not; each keeps its own options."""
    from ccdf.operators import SingleCoilMRI

    single = SingleCoilMRI.cartesian((8, 16), 2, 0.25, "uniform", seed=3)
    multi = MultiCoilMRI.cartesian((8, 16), 2, 0.25, "uniform", seed=3)
    expected = cartesian_mask(16, 2, 0.25, "uniform", 3)
    assert single.mask.shape == (1, 1, 8, 16) and multi.size == (8, 16)
    torch.testing.assert_close(single.mask[0, 0], expected[None].expand(8, -1))
    torch.testing.assert_close(multi.mask.reshape(-1, 16)[0], expected)
    assert type(SingleCoilMRI.cartesian(16, per_image=True)).__name__ == "RandomCartesianMRI"
    assert SingleCoilMRI.cartesian(16, per_image=True).mask_args == (16, 4.0, 0.08, "uniform")
    maps = torch.ones(2, 16, 16, dtype=torch.complex64) / math.sqrt(2)
    assert MultiCoilMRI.cartesian(16, maps=maps).num_coils == 2
    with pytest.raises(ValueError, match="maps is for MultiCoilMRI"):
        SingleCoilMRI.cartesian(16, maps=maps)
    with pytest.raises(ValueError, match="per_image masks are for SingleCoilMRI"):
        MultiCoilMRI.cartesian(16, per_image=True)


def test_ssos_average_is_the_mean_of_the_combined_images():
    """score-MRI's SSOS with ``average=2``: the mean of two RSS-combined runs (not the RSS of averaged coil
    images), each run with its own streams, NFE 2 C N'."""
    from ccdf.denoisers import CountingDenoiser
    from ccdf.sampling.average import run_generators
    from ccdf.sampling.multicoil import sample_ssos
    from ccdf.utils.rng import per_sample_generators

    den, schedule, op, x0 = small_problem()
    y = op(x0)
    x_init = op.pinv(y)
    kw = dict(t0=0.3, num_steps=20, step="ddpm")
    counter = CountingDenoiser(den)
    avg = sample_ssos(counter, schedule, op, y, x_init, generator=per_sample_generators(0, [0, 1]), average=2, **kw)
    assert counter.per_item == [2 * 3 * 6, 2 * 3 * 6]  # K runs x 3 coils x N' = 6
    runs = [sample_ssos(den, schedule, op, y, x_init, generator=g, **kw)
            for g in run_generators(per_sample_generators(0, [0, 1]), 2)]  # fmt: skip
    torch.testing.assert_close(avg, (runs[0] + runs[1]) / 2, rtol=0, atol=1e-12)
    assert float((runs[0] - runs[1]).abs().max()) > 1e-3
