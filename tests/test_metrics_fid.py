"""FID/KID through clean-fid's pipeline with local extractors: agreement with independent
computations and with clean-fid itself, caching, and clear errors for missing or corrupt weights
(with every network path blocked, so nothing can download)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from ccdf.metrics import (
    WEIGHT_FILES,
    CorruptWeightsError,
    FeatureStats,
    MissingWeightsError,
    compute_fid_kid,
    fid_from_features,
    frechet_distance,
    image_features,
    kernel_distance,
    load_inception,
    reference_stats,
)
from ccdf.metrics import fid as fid_module
from ccdf.utils.io import save_png
from tests.helpers import FakeInception, gen


class TinyExtractor(nn.Module):
    """A fixed random conv net: [B, 3, 299, 299] in [0, 255] -> [B, dim] (stands in for Inception)."""

    def __init__(self, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, dim, kernel_size=13, stride=13)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen(seed)) * 0.05)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x / 127.5 - 1)).mean(dim=(2, 3))


def smooth_images(n: int, seed: int, contrast: float = 1.0, brightness: float = 0.0) -> torch.Tensor:
    """[n, 3, 32, 32] in [0, 1]: random 4x4 patterns, bilinearly upsampled (structured, not white noise)."""
    low = torch.rand(n, 3, 4, 4, generator=gen(seed))
    x = nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return (0.5 + brightness + contrast * (x - 0.5)).clamp(0, 1)


def write_folder(path, images: torch.Tensor):
    path.mkdir(parents=True)
    for i, img in enumerate(images):
        save_png(path / f"{i:05d}.png", img)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    a, b = smooth_images(12, seed=1), smooth_images(10, seed=2, contrast=0.6, brightness=0.2)
    return write_folder(root / "a", a), write_folder(root / "b", b), a, b


def scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID written out independently: means, covariances, scipy's sqrtm."""
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1.T), np.cov(f2.T)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def unbiased_poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with k(a, b) = (a.b / d + 1)^3, in torch float64."""
    x, y = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    d = x.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    def offdiag_mean(kk):
        m = kk.shape[0]
        return (kk.sum() - kk.diagonal().sum()) / (m * (m - 1))

    return float(offdiag_mean(k(x, x)) + offdiag_mean(k(y, y)) - 2 * k(x, y).mean())


def test_fid_kid_of_folders_agree_with_independent_computations(folders, no_network):
    dir_a, dir_b, _, _ = folders
    ext = TinyExtractor()
    fa, fb = image_features(dir_a, ext), image_features(dir_b, ext)
    assert fa.shape == (12, 6) and fb.shape == (10, 6)
    out = compute_fid_kid(dir_a, dir_b, extractor=ext)
    assert out["fid"] > 0.1 and out["kid"] > 0.01  # clearly different sets
    assert out["fid"] == pytest.approx(scipy_fid(fa, fb), rel=1e-6)
    assert out["fid"] == pytest.approx(fid_from_features(fa, fb), rel=1e-12)
    # 12 vs 10 images: KID averages subsets of 10; on equal-size sets it is exactly the unbiased MMD^2
    assert kernel_distance(fa[:10], fb) == pytest.approx(unbiased_poly_mmd2(fa[:10], fb), rel=1e-9)
    assert out["kid"] == pytest.approx(kernel_distance(fa, fb), rel=1e-12)


def test_same_numbers_as_cleanfid_compute_fid(folders, no_network):
    """clean-fid's own top level (compute_fid with a custom extractor) gives the same FID."""
    from cleanfid import fid as cfid

    dir_a, dir_b, _, _ = folders
    ext = TinyExtractor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # clean-fid passes sqrtm's deprecated disp=
        ref = cfid.compute_fid(
            str(dir_a),
            str(dir_b),
            mode="clean",
            custom_feat_extractor=ext,
            device=torch.device("cpu"),
            num_workers=0,
            verbose=False,
        )
    assert compute_fid_kid(dir_a, dir_b, extractor=ext)["fid"] == pytest.approx(ref, rel=1e-6)


def test_frechet_and_kernel_distance_match_cleanfid_functions():
    from cleanfid import fid as cfid

    rng = np.random.default_rng(0)
    f1, f2 = rng.standard_normal((15, 5)), rng.standard_normal((12, 5)) * 1.3 + 0.2
    s1, s2 = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref_fid = cfid.frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)
    assert frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma) == pytest.approx(ref_fid, rel=1e-10)
    np.random.seed(3)
    ref_kid = cfid.kernel_distance(f1, f2, num_subsets=5, max_subset_size=8)
    assert kernel_distance(f1, f2, num_subsets=5, max_subset_size=8, seed=3) == pytest.approx(ref_kid, rel=1e-9)


def test_fid_of_a_set_with_itself_is_zero(folders, no_network):
    dir_a, _, images_a, _ = folders
    out = compute_fid_kid(dir_a, images_a, extractor=TinyExtractor())
    assert abs(out["fid"]) < 1e-6


def test_tensors_give_the_features_of_their_saved_pngs(folders, no_network):
    dir_a, _, images_a, _ = folders
    ext = TinyExtractor()
    # Not bit for bit: the extractor's tanh may take a vectorised or a scalar path depending on the batch's
    # size (batch_size 5 vs 32 here), whose last bits differ on some CPUs. 2e-7 is a few float32 ulps of the
    # features, 10x below what one pixel changed by one grey level moves them (>= 2.2e-6 measured on these images).
    same = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=2e-7)  # noqa: E731
    same(image_features(images_a, ext, batch_size=5), image_features(dir_a, ext))
    # uint8 input, and one channel is read as gray RGB (what PIL's convert("RGB") does)
    as_uint8 = (images_a * 255).round().to(torch.uint8)
    same(image_features(as_uint8, ext), image_features(dir_a, ext))
    gray = images_a[:, :1]
    same(image_features(gray, ext), image_features(gray.expand(-1, 3, -1, -1), ext))


def test_reference_stats_are_cached_and_invalidated(folders, tmp_path, monkeypatch, no_network):
    dir_a, _, images_a, _ = folders
    ref = write_folder(tmp_path / "ref", images_a[:6])
    cache = tmp_path / "cache"
    first = reference_stats(ref, TinyExtractor(), cache_dir=cache)
    (cached,) = cache.glob("ref-*.npz")
    calls = []
    real = fid_module.image_features
    monkeypatch.setattr(fid_module, "image_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = reference_stats(ref, TinyExtractor(), cache_dir=cache)
    assert calls == [] and again.key == first.key
    np.testing.assert_array_equal(again.sigma, first.sigma)
    reference_stats(ref, TinyExtractor(seed=1), cache_dir=cache)  # another network: another key
    save_png(ref / "extra.png", images_a[7])  # another folder content: another key
    changed = reference_stats(ref, TinyExtractor(), cache_dir=cache)
    assert len(calls) == 2 and changed.num == 7 and len(list(cache.glob("*.npz"))) == 3
    assert not list(cache.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_missing_inception_names_file_place_and_url(tmp_path, folders, no_network):
    dir_a, dir_b, _, _ = folders
    weights = tmp_path / "weights"
    with pytest.raises(MissingWeightsError) as info:
        compute_fid_kid(dir_a, dir_b, inception=weights)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    spec = WEIGHT_FILES["inception"]
    assert spec.filename in msg and str(weights / spec.filename) in msg and spec.url in msg
    assert "curl -L -o" in msg or "wget" in msg
    from cleanfid.downloads_helper import inception_url

    assert spec.url == inception_url  # the file clean-fid itself would fetch


def test_local_inception_is_cleanfid_inception_v3w(tmp_path, no_network):
    from cleanfid.inception_torchscript import InceptionV3W

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script / load are deprecated in torch 2.x
        torch.jit.script(FakeInception()).save(str(tmp_path / WEIGHT_FILES["inception"].filename))
        theirs = InceptionV3W(str(tmp_path), download=False)
    ours = load_inception(tmp_path)
    assert ours.fingerprint.startswith("inception:")
    x = torch.rand(2, 3, 299, 299, generator=gen(0)) * 255
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    assert image_features(torch.rand(3, 3, 20, 24, generator=gen(1)), ours).shape == (3, 2048)


def test_corrupt_inception_files_are_reported(tmp_path, no_network):
    path = tmp_path / WEIGHT_FILES["inception"].filename
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(CorruptWeightsError, match="not a readable TorchScript") as info:
        load_inception(path)
    assert str(path) in str(info.value) and WEIGHT_FILES["inception"].url in str(info.value)
    torch.save({"w": torch.zeros(2)}, path)  # a plain checkpoint, not TorchScript
    with pytest.raises(CorruptWeightsError, match="not a readable TorchScript"):
        load_inception(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(nn.Linear(2, 2)).save(str(path))  # TorchScript, but not Inception
    with pytest.raises(CorruptWeightsError, match="no 'layers'"):
        load_inception(path)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="N >= 2"):
        fid_from_features(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="dimensions differ"):
        kernel_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[N, 1 or 3, H, W\]"):
        image_features(torch.zeros(2, 4, 8, 8), TinyExtractor())


@pytest.mark.parametrize(("n1", "n2", "d"), [(12, 9, 40), (30, 25, 8)])
def test_low_rank_fid_equals_the_sqrtm_formula(n1, n2, d):
    """Fewer images than dimensions: the nuclear-norm trace term equals scipy's sqrtm formula."""
    g = np.random.default_rng(0)
    f1, f2 = g.normal(size=(n1, d)), g.normal(0.3, 1.5, size=(n2, d))
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    expected = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * root)
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-6)
