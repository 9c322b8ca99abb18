"""Per-image operator parameters: masks drawn from each image's own generator, or read per image name.

The app tests call :func:`ccdf.app.reconstruct` in-process on a composed config (32x32 images, the
Gaussian model, 10 reverse steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from ccdf.operators import Inpainting, SingleCoilMRI
from ccdf.utils.rng import per_sample_generators
from tests.helpers import compose_cfg

FAST = ["dataset.size=32", "sampler.num_steps=20", "sampler.t0=0.5", "eval.fid=false", "eval.lpips=false"]


def run_app(tmp_path: Path, run: str, *overrides: str) -> dict:
    from ccdf.app import reconstruct, validate

    cfg = compose_cfg([*FAST, f"eval.cache_dir={tmp_path / 'cache'}", *overrides])
    HydraConfig.instance().set_config(cfg)
    validate(cfg)
    reconstruct(cfg, tmp_path / run, [])
    return json.loads((tmp_path / run / "metrics.json").read_text())


def rows(metrics: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["per_image"]]


def test_random_masks_are_drawn_per_image_from_its_own_generator():
    op = Inpainting.random(16, 0.7, seed=0, per_image=True)
    batch = {"name": ["a", "b", "c"], "index": [0, 1, 2]}
    masks = op.for_batch(batch, per_sample_generators(0, [0, 1, 2])).mask
    alone = op.for_batch({"name": ["b"], "index": [1]}, per_sample_generators(0, [1])).mask
    assert masks.shape == (3, 1, 16, 16)
    torch.testing.assert_close(masks[1:2], alone, rtol=0, atol=0)  # independent of the batch
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    assert (masks.flatten(1).sum(1) == round(0.3 * 256)).all()  # exactly round((1 - ratio) H W) observed
    # the batched operator is consistent item by item
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    batched = op.for_batch(batch, per_sample_generators(0, [0, 1, 2]))
    for b in range(3):
        torch.testing.assert_close(batched(x)[b : b + 1], batched.select([b])(x[b : b + 1]))
    mri = SingleCoilMRI.cartesian(16, acceleration=4, center_fraction=0.125, per_image=True)
    m = mri.for_batch(batch, per_sample_generators(0, [0, 1, 2])).mask
    assert m.shape == (3, 1, 16, 16) and not torch.equal(m[0], m[1])
    assert (m[:, 0, 0].sum(-1) == 4).all()  # round(16 / 4) sampled columns each


@pytest.mark.parametrize("task", ["inpaint", "mri"])
def test_per_image_masks_make_results_independent_of_batching(tmp_path, task):
    """``operator.per_image=true``: each image's mask comes from its own generator, so batch sizes 1 and 3
    give the same per-image results; and the images' masks differ (the results differ from a shared mask)."""
    extra = [f"task={task}", "operator.per_image=true", "eval.resume=false"]
    one = run_app(tmp_path, "b1", *extra, "batch_size=1")
    three = run_app(tmp_path, "b3", *extra, "batch_size=3")
    assert rows(one) == rows(three)
    shared = run_app(tmp_path, "shared", f"task={task}", "eval.resume=false")
    assert [r["init_psnr"] for r in rows(shared)] != [r["init_psnr"] for r in rows(one)]


def test_mask_files_per_image_are_read_by_name_and_checked_before_sampling(tmp_path, monkeypatch):
    names = ["00000", "00001", "00002", "00003"]  # the bundled evaluation faces
    folder = tmp_path / "masks"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(((rng.random((32, 32)) > 0.5) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    metrics = run_app(tmp_path, "ok", "task=inpaint", "operator=inpaint_folder", f"operator.root={folder}")
    assert metrics["num_images"] == 4 and metrics["dc_residual"] < 1e-5
    # a mask of the wrong size: a clear error naming the file, before any sampling step
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(folder / "00002.png")
    import ccdf.sampling.solvers.base as solvers_base

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampling started before the mask files were checked")

    monkeypatch.setattr(solvers_base.Solver, "__call__", no_sampling)
    with pytest.raises(ValueError, match=r"mask file .*00002\.png is 16x16, the images are 32x32"):
        run_app(tmp_path, "bad", "task=inpaint", "operator=inpaint_folder", f"operator.root={folder}",
                "eval.resume=false")  # fmt: skip
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(folder / "00002.png")
    (folder / "00003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask file not found: .*00003\.png"):
        run_app(tmp_path, "missing", "task=inpaint", "operator=inpaint_folder", f"operator.root={folder}")


def test_a_single_mask_file_of_the_wrong_size_is_an_error_naming_it(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.zeros((20, 16), dtype=np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"mask file .*mask\.png is 20x16, the images are 16x16"):
        Inpainting.from_file(path, 16)


@pytest.mark.e2e  # three in-process app runs (make test-e2e)
def test_sampler_average_in_the_app_counts_k_nfe_and_is_batch_independent(tmp_path):
    """``sampler.average=3``: NFE per image = 3 N', metrics differ from the single run, and batch sizes
    1 and 3 give the same per-image rows."""
    extra = ["task=inpaint", "eval.resume=false"]
    one = run_app(tmp_path, "b1", *extra, "sampler.average=3", "batch_size=1")
    three = run_app(tmp_path, "b3", *extra, "sampler.average=3", "batch_size=3")
    single = run_app(tmp_path, "k1", *extra, "batch_size=3")
    assert rows(one) == rows(three)
    assert [r["nfe"] for r in rows(one)] == [30] * len(rows(one))  # K N' = 3 round(0.5 * 20)
    assert [r["nfe"] for r in rows(single)] == [10] * len(rows(one))
    assert [r["psnr"] for r in rows(single)] != [r["psnr"] for r in rows(one)]
    with pytest.raises(ValueError, match="sampler.average"):
        run_app(tmp_path, "bad", *extra, "sampler.average=0")
