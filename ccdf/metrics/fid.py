r"""FID and KID through clean-fid's "clean" pipeline, with the Inception network from a local file.

* Images go through clean-fid itself: ``cleanfid.fid.get_files_features`` for files (PIL reads
  them as RGB, then clean-fid's ``"clean"`` resize: per-channel float PIL bicubic to 299x299) and
  the same resizer for in-memory tensors, which are first quantised to uint8 exactly as
  :func:`ccdf.utils.io.save_png` quantises them, so a tensor and its saved PNG give the same features.
* The extractor is :class:`InceptionFeatures`, clean-fid's ``InceptionV3W`` forward
  (``resize_inside=False``) over the TorchScript file ``inception-2015-12-05.pt`` loaded from a path
  you give. clean-fid's own builders (``build_feature_extractor``, ``compute_fid``,
  ``InceptionV3W(download=True)``) download that file to /tmp when it is absent; this module never
  calls them. A missing file raises :class:`~ccdf.metrics.weights.MissingWeightsError`.
* Any ``nn.Module`` mapping ``[B, 3, 299, 299]`` floats in [0, 255] to ``[B, D]`` features can
  stand in for Inception (tests use a tiny conv net).
* :func:`frechet_distance` and :func:`kernel_distance` follow clean-fid's ``frechet_distance`` and
  ``kernel_distance`` in float64 (KID with an explicit seed). KID is reported unscaled (papers often
  print KID x 1000). They are written here, not called, because no library has the variants needed
  (each docstring says which); torchmetrics' FID/KID metrics take images through their own
  torch-fidelity Inception, not clean-fid's features.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn

from ccdf.metrics.weights import CorruptWeightsError, fetch_hint, resolve
from ccdf.utils.io import atomic_write, to_uint8

# clean-fid's image EXTENSIONS (cleanfid.utils) without "npy": ccdf writes complex (MRI)
# reconstructions as .npy next to their PNGs, and those are not images to score.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})
CACHE_FORMAT = 1  # bump when the cached statistics change meaning
ImageSource = str | Path | Sequence[str | Path] | Tensor


class InceptionFeatures(nn.Module):
    """clean-fid's Inception-v3 pool3 features (``InceptionV3W``, ``resize_inside=False``) from a local file.

    Args:
        path: the TorchScript file ``inception-2015-12-05.pt``.

    ``forward`` maps ``[B, 3, 299, 299]`` floats in [0, 255] (clean-fid's resized images) to
    ``[B, 2048]``. ``fingerprint`` is the SHA-256 of the file (keys the reference-statistics cache).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        self.fingerprint = "inception:" + _file_sha256(path)
        try:
            with warnings.catch_warnings():  # TorchScript is the published format; torch >= 2.10 warns on load
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
                base = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise CorruptWeightsError(
                f"{path} is not a readable TorchScript archive ({type(err).__name__}: {str(err).splitlines()[0]}).\n"
                f"Replace it (a truncated download is the usual cause):\n{fetch_hint('inception', path)}"
            ) from err
        if not isinstance(getattr(base, "layers", None), nn.Module):
            raise CorruptWeightsError(
                f"{path} is TorchScript but has no 'layers' submodule, so it is not clean-fid's Inception network.\n"
                f"{fetch_hint('inception', path)}"
            )
        self.layers = base.layers
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 299, 299):
            raise ValueError(f"Inception features need [B, 3, 299, 299] in [0, 255], got {tuple(x.shape)}")
        return self.layers((x - 128) / 128).view(x.shape[0], 2048)  # clean-fid's InceptionV3W.forward


def load_inception(path: str | Path, *, device: str | torch.device = "cpu") -> InceptionFeatures:
    """:class:`InceptionFeatures` from ``path``: the ``.pt`` file, or a folder holding ``inception-2015-12-05.pt``.

    Raises:
        MissingWeightsError: no such file (the message says where it goes and how to get it).
        CorruptWeightsError: the file is not clean-fid's TorchScript Inception.
    """
    return InceptionFeatures(resolve("inception", path, None)).to(device)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def extractor_fingerprint(extractor: nn.Module) -> str:
    """A stable identity of a feature extractor: its ``fingerprint`` attribute if it has one, else a
    hash of its class name and ``state_dict`` (parameter-free extractors should set ``fingerprint``)."""
    given = getattr(extractor, "fingerprint", None)
    if isinstance(given, str):
        return given
    h = hashlib.sha256(f"{type(extractor).__module__}.{type(extractor).__qualname__}".encode())
    for name, value in extractor.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(value.view(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return "module:" + h.hexdigest()


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, like clean-fid), sorted; ``.npy`` files are not images here."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def image_features(
    images: ImageSource,
    extractor: nn.Module,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> np.ndarray:
    """Features of images through clean-fid's "clean" resize, as ``[N, D]`` (the extractor's dtype).

    Args:
        images: a folder (searched recursively), a list of image files, or a tensor ``[N, C, H, W]``
            (C = 1 or 3) that is uint8 or float in [0, 1] (floats are clamped and rounded to uint8
            as :func:`ccdf.utils.io.save_png` does; one channel is repeated to RGB as PIL does).
        extractor: maps ``[B, 3, 299, 299]`` floats in [0, 255] to ``[B, D]``; used as given (put it
            in eval mode on its device).
        batch_size: images per extractor call.
        device: where batches go; default: the extractor's device.
        num_workers: DataLoader workers that read and resize files (clean-fid's parallel resize).
    """
    from cleanfid.fid import get_batch_features, get_files_features

    device = _module_device(extractor) if device is None else torch.device(device)
    if isinstance(images, Tensor):
        return _tensor_features(images, extractor, batch_size=batch_size, device=device, get_batch=get_batch_features)
    files = list_images(images) if isinstance(images, str | Path) else [Path(f) for f in images]
    if not files:
        raise ValueError(f"no images found in {images}")
    return get_files_features(
        [str(f) for f in files],
        model=extractor,
        num_workers=num_workers,
        batch_size=batch_size,
        device=device,
        mode="clean",
        verbose=False,
    )


def _tensor_features(images: Tensor, extractor: nn.Module, *, batch_size: int, device, get_batch) -> np.ndarray:
    from cleanfid.resize import build_resizer

    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be [N, 1 or 3, H, W] with N >= 1, got {tuple(images.shape)}")
    if images.dtype != torch.uint8 and (images.is_complex() or not images.is_floating_point()):
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    resize = build_resizer("clean")  # uint8 [H, W, 3] -> float32 [299, 299, 3] in [0, 255]
    feats = []
    for start in range(0, images.shape[0], batch_size):
        batch = []
        for img in images[start : start + batch_size]:
            arr = img.detach().to("cpu").permute(1, 2, 0).numpy() if img.dtype == torch.uint8 else to_uint8(img)
            arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
            if arr.shape[2] == 1:
                arr = np.repeat(arr, 3, axis=2)
            # clean-fid's ResizeDataset turns the float32 result into [3, 299, 299] without scaling
            batch.append(torch.from_numpy(np.ascontiguousarray(resize(arr).transpose(2, 0, 1))))
        feats.append(get_batch(torch.stack(batch), extractor, device))
    return np.concatenate(feats)


@dataclass(frozen=True)
class FeatureStats:
    """Features of an image set and their Gaussian statistics (mean ``mu`` [D], covariance ``sigma`` [D, D]).

    ``key`` identifies what the features were computed from (see :func:`reference_stats`).
    """

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    key: str = ""

    @classmethod
    def from_features(cls, features: np.ndarray, key: str = "") -> FeatureStats:
        f = _as_features(features, "features")
        return cls(features=np.asarray(features), mu=f.mean(axis=0), sigma=np.cov(f, rowvar=False), key=key)

    @property
    def num(self) -> int:
        """How many images the features come from."""
        return len(self.features)

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` atomically (a reader never sees a partial file)."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=self.features, mu=self.mu, sigma=self.sigma, key=np.array(self.key))

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(path, allow_pickle=False) as z:
            return cls(features=z["features"], mu=z["mu"], sigma=z["sigma"], key=str(z["key"]))


def _as_features(f: np.ndarray, name: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must be [N, D] with N >= 2, got shape {f.shape}")
    return f


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    r"""Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID; Heusel et al. 2017), in float64:

    :math:`\|\mu_1 - \mu_2\|^2 + \operatorname{Tr}(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2})`,
    with ``scipy.linalg.sqrtm`` as in clean-fid's ``frechet_distance`` (which also adds ``eps`` to the
    diagonals when the product's square root is not finite, and drops a negligible imaginary part).

    Written here because clean-fid's function calls ``sqrtm(..., disp=False)``, deprecated in SciPy
    (a ``DeprecationWarning`` now, an error once removed), prints to stdout instead of warning and checks
    shapes with ``assert``; the numbers are the same (``tests/test_metrics_fid.py``).

    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
    4.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals", RuntimeWarning, stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has a large imaginary component {np.abs(covmean.imag).max():g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of equal-size samples x, y [m, d] under k(a, b) = (a.b / d + 1)^3."""
    m, d = x.shape
    k_xx, k_yy, k_xy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


def kernel_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    r"""Kernel Inception Distance (Bińkowski et al. 2018), clean-fid's ``kernel_distance`` in float64.

    The unbiased MMD^2 with the cubic kernel :math:`k(a, b) = (a^\top b / D + 1)^3`, averaged over
    ``num_subsets`` pairs of random subsets of size m = min(N1, N2, ``max_subset_size``), drawn
    without replacement with ``np.random.RandomState(seed)`` in clean-fid's order (so clean-fid with
    ``np.random.seed(seed)`` gives the same subsets). When both sets have exactly m rows every subset
    is the whole set, so the average is computed once.

    Written here because clean-fid's ``kernel_distance`` draws from NumPy's global generator (no seed
    argument: a run's KID would depend on whatever ran before) and repeats identical subsets.
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    m = min(f1.shape[0], f2.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 images, got max_subset_size={max_subset_size}")
    if f1.shape[0] == f2.shape[0] == m:
        return _polynomial_mmd2(f2, f1)
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = f2[rng.choice(f2.shape[0], m, replace=False)]
        y = f1[rng.choice(f1.shape[0], m, replace=False)]
        total += _polynomial_mmd2(x, y)
    return total / num_subsets


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    r"""FID between two feature sets ``[N1, D]``, ``[N2, D]`` (clean-fid's ``fid_from_feats``).

    When a set has fewer images than feature dimensions (e.g. 1000 images, D = 2048) the
    covariances are low-rank, and the trace term has an exact closed form that avoids the
    D x D matrix square root (47 s on 2 cores for D = 2048): with centred features
    :math:`A = X_1^\top/\sqrt{N_1-1}`, :math:`B = X_2^\top/\sqrt{N_2-1}`, the eigenvalues of
    :math:`\Sigma_1\Sigma_2 = AA^\top BB^\top` are the squared singular values of :math:`B^\top A`, so
    :math:`\operatorname{Tr}(\Sigma_1\Sigma_2)^{1/2} = \|B^\top A\|_*` (nuclear norm).
    Otherwise :func:`frechet_distance` (``sqrtm``) is used. No library computes this exact low-rank
    form (clean-fid and torchmetrics always take the D x D square root or eigenvalues).
    """
    f1, f2 = _as_features(features1, "features1"), _as_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    if min(f1.shape[0], f2.shape[0]) >= f1.shape[1]:
        s1, s2 = FeatureStats.from_features(f1), FeatureStats.from_features(f2)
        return frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a = (f1 - mu1) / np.sqrt(f1.shape[0] - 1)  # [N1, D]
    b = (f2 - mu2) / np.sqrt(f2.shape[0] - 1)  # [N2, D]
    trace_sqrt = np.linalg.svd(b @ a.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt)


def kid_from_features(
    features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> float:
    """KID between two feature sets (:func:`kernel_distance`)."""
    return kernel_distance(features1, features2, num_subsets=num_subsets, max_subset_size=max_subset_size, seed=seed)


def stats_key(folder: str | Path, fingerprint: str) -> str:
    """Cache key of a folder's statistics: its image files (relative path, size, mtime), the
    extractor fingerprint, clean-fid's mode and the cache format. Any change gives a new key."""
    folder = Path(folder)
    files = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in list_images(folder)]
    blob = {"format": CACHE_FORMAT, "mode": "clean", "extractor": fingerprint, "files": files}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def reference_stats(
    folder: str | Path,
    extractor: nn.Module,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 0,
) -> FeatureStats:
    """:class:`FeatureStats` of a reference folder, cached as ``<cache_dir>/<folder name>-<key[:16]>.npz``.

    The key (:func:`stats_key`) covers the folder's files and :func:`extractor_fingerprint`, so a
    changed folder or network recomputes. Without ``cache_dir`` nothing is cached.
    """
    if cache_dir is None:
        feats = image_features(folder, extractor, batch_size=batch_size, device=device, num_workers=num_workers)
        return FeatureStats.from_features(feats)
    key = stats_key(folder, extractor_fingerprint(extractor))
    path = Path(cache_dir) / f"{Path(folder).resolve().name}-{key[:16]}.npz"
    if path.is_file():
        try:
            stats = FeatureStats.load(path)
            if stats.key == key:
                return stats
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"unreadable statistics cache {path} ({err}); recomputing", RuntimeWarning, stacklevel=2)
    feats = image_features(folder, extractor, batch_size=batch_size, device=device, num_workers=num_workers)
    stats = FeatureStats.from_features(feats, key=key)
    stats.save(path)
    return stats


def compute_fid_kid(
    recon: ImageSource,
    ref: ImageSource,
    *,
    inception: str | Path | None = None,
    extractor: nn.Module | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID and KID of reconstructions against references, through clean-fid's "clean" pipeline.

    Args:
        recon, ref: image folders, lists of files, or tensors (see :func:`image_features`).
        inception: the ``inception-2015-12-05.pt`` file, or the weights folder that holds it.
        extractor: a feature extractor to use instead of Inception (then ``inception`` is unused).
        device: where the Inception network is loaded and run (a given ``extractor`` runs where it is).
        cache_dir: cache folder for the statistics of a reference *folder* (:func:`reference_stats`).
        kid_subsets, kid_subset_size, seed: :func:`kernel_distance`'s subsets.

    Returns:
        ``{"fid": ..., "kid": ...}`` (KID unscaled).

    Raises:
        MissingWeightsError: the Inception file is absent (catch it to skip FID/KID).
        CorruptWeightsError: the Inception file is unreadable.
    """
    if extractor is None:
        if inception is None:
            raise ValueError("give the Inception weights (file or folder) or a feature extractor")
        extractor = load_inception(inception, device=device)
    else:
        device = _module_device(extractor)
    opts = {"batch_size": batch_size, "device": device, "num_workers": num_workers}
    recon_stats = FeatureStats.from_features(image_features(recon, extractor, **opts))
    if isinstance(ref, str | Path):
        ref_stats = reference_stats(ref, extractor, cache_dir=cache_dir, **opts)
    else:
        ref_stats = FeatureStats.from_features(image_features(ref, extractor, **opts))
    return {
        "fid": fid_from_features(recon_stats.features, ref_stats.features),
        "kid": kernel_distance(
            recon_stats.features,
            ref_stats.features,
            num_subsets=kid_subsets,
            max_subset_size=kid_subset_size,
            seed=seed,
        ),
    }
