"""Data trust: every item is read before the first sampling step, bad ones stop the run (or are
skipped on request), and cached results are keyed by each image's content as well as its index.

The app tests call :func:`ccdf.app.reconstruct` in-process on a composed config (32x32 images, the
Gaussian model, 10 reverse steps): a second or so each instead of a subprocess's 10-15 s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccdf.data import ComplexSliceFolder, ImageFolder, bundled_samples
from ccdf.data.check import UnusableItemsError, check_items, item_key
from ccdf.evaluation import ResultStore
from ccdf.utils.io import save_png
from tests.helpers import SIZE, reconstruct, strip


def faces(split: str = "eval") -> list[torch.Tensor]:
    data = bundled_samples("ffhq", split, size=SIZE)
    return [(data[i]["x0"] + 1) / 2 for i in range(len(data))]


def write_folder(folder: Path, images: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        save_png(folder / f"{name}.png", img)
    return folder


# ---------------------------------------------------------------- the check itself (no sampling)


def test_check_lists_every_bad_item_and_skips_them_on_request(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    np.save(tmp_path / "a.npy", good)
    nan = good.copy()
    nan[2, 3] = np.nan
    np.save(tmp_path / "b_nan.npy", nan)
    np.save(tmp_path / "c.npy", rng.normal(size=(8, 8)).astype(np.float32))
    (tmp_path / "d_broken.npy").write_bytes(b"garbage")
    np.save(tmp_path / "e_zero.npy", np.zeros((8, 8)))
    ds = ComplexSliceFolder(tmp_path, size=8)
    with pytest.raises(UnusableItemsError) as err:
        check_items(ds)
    msg = str(err.value)
    assert msg.startswith("3 of 5 data items cannot be used") and "dataset.skip_unreadable=true" in msg
    assert "item 1: MRI slice " + str(tmp_path / "b_nan.npy") + ": 1 of 64 values are NaN or infinite" in msg
    assert "item 3: cannot read MRI slice " + str(tmp_path / "d_broken.npy") in msg
    assert "item 4: MRI slice " + str(tmp_path / "e_zero.npy") + ": all-zero image" in msg
    checked = check_items(ds, skip_unreadable=True)
    assert checked.indices == [0, 2]  # the usable items keep their positions (their generators' keys)
    assert [line.split(":")[0] for line in checked.skipped] == ["item 1", "item 3", "item 4"]
    assert checked.keys == {0: item_key(ds[0]["x0"], "a"), 2: item_key(ds[2]["x0"], "c")}
    (tmp_path / "a.npy").unlink()
    for name in ("b_nan", "c", "d_broken", "e_zero"):
        (tmp_path / f"{name}.npy").unlink()
    np.save(tmp_path / "z.npy", np.full((8, 8), np.inf))
    with pytest.raises(UnusableItemsError, match="none of the 1 data items can be used"):
        check_items(ComplexSliceFolder(tmp_path, size=8), skip_unreadable=True)


def test_check_reports_upscaled_images_once(tmp_path, recwarn):
    Image.new("RGB", (4, 6), (10, 20, 30)).save(tmp_path / "tiny.png")
    Image.new("RGB", (20, 20), (10, 20, 30)).save(tmp_path / "small.png")  # 1.6x: below the threshold
    checked = check_items(ImageFolder(tmp_path, size=32))
    assert checked.notes == [f"{tmp_path / 'tiny.png'}: 4x6 image upscaled 8.0x to 32x32 (more than 2x)"]
    assert not [w for w in recwarn if "upscaled" in str(w.message)]  # gathered, not also printed


def test_item_key_follows_content_and_name():
    x = torch.zeros(3, 4, 4)
    y = x.clone()
    y[0, 1, 2] = 1e-6
    assert item_key(x, "a") == item_key(x.clone(), "a")
    assert len({item_key(x, "a"), item_key(y, "a"), item_key(x, "b"), item_key(x.double(), "a")}) == 4


def test_store_counts_a_result_only_for_the_same_content(tmp_path):
    store = ResultStore(tmp_path, "inpaint", {"a": 1})
    x = torch.zeros(3, 4, 4)
    for i, key in ((0, "k0"), (1, "k1")):
        store.write_inputs(i, x, x, x[None])
        store.write(0.2, i, {"name": str(i), "key": key, "psnr": 1.0}, x)
    assert store.pending([0.2], [0, 1, 2], {0: "k0", 1: "other", 2: "k2"}) == [(0.2, 1), (0.2, 2)]
    assert store.pending([0.2], [0, 1]) == []  # without keys: presence only
    assert [r["key"] for r in store.read(0.2, [0, 1], {0: "k0", 1: "k1"})] == ["k0", "k1"]
    with pytest.raises(RuntimeError, match=r"image 1 \(1\) at t0=0.2 .* other content"):
        store.read(0.2, [0, 1], {0: "k0", 1: "new"})


# ---------------------------------------------------------------- through the app


def test_bad_image_stops_the_app_before_any_sampling(tmp_path, monkeypatch):
    """A corrupt last image used to fail inside the predict loop, after the first images were sampled."""
    import ccdf.lightning.reconstruction as rec

    eval_faces = faces()
    folder = write_folder(tmp_path / "images", {"a": eval_faces[0], "b": eval_faces[1]})
    (folder / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    steps = []
    monkeypatch.setattr(rec.ReconstructionModule, "predict_step", lambda self, *a: steps.append(1))
    cache = tmp_path / "cache"
    with pytest.raises(UnusableItemsError) as err:
        reconstruct(tmp_path, "run", "dataset=folder", f"dataset.root={folder}", f"eval.cache_dir={cache}",
                    "batch_size=1")  # fmt: skip
    assert f"item 2: cannot read image {folder / 'c_broken.png'}" in str(err.value)
    assert "dataset.skip_unreadable=true" in str(err.value)
    assert steps == [] and not [p for p in cache.rglob("*") if p.is_file()]  # (validate made the folder, empty)


def test_skip_unreadable_leaves_bad_images_out_with_one_warning(tmp_path, caplog):
    """Index 1 is corrupt: the others keep indices 0, 2, 3 and exactly the results of a run where
    image 1 was readable (their noise is keyed by index); one warning names the file."""
    eval_faces = faces()
    images = {"a": eval_faces[0], "b": eval_faces[1], "c": eval_faces[2], "d": eval_faces[3]}
    good = write_folder(tmp_path / "good", images)
    bad = write_folder(tmp_path / "bad", images)
    (bad / "b.png").write_bytes(b"not an image")
    ref = reconstruct(tmp_path, "ref", "dataset=folder", f"dataset.root={good}", f"eval.cache_dir={tmp_path / 'c1'}")
    with caplog.at_level(logging.WARNING, logger="ccdf"):
        m = reconstruct(tmp_path, "skip", "dataset=folder", f"dataset.root={bad}", "dataset.skip_unreadable=true",
                        f"eval.cache_dir={tmp_path / 'c2'}")  # fmt: skip
    warned = [r.getMessage() for r in caplog.records if "skip_unreadable" in r.getMessage()]
    assert len(warned) == 1 and f"1 of 4 item(s) left out:\n  item 1: cannot read image {bad / 'b.png'}" in warned[0]
    assert [r["index"] for r in m["per_image"]] == [0, 2, 3] and m["num_images"] == 3
    kept = [r for r in ref["per_image"] if r["index"] != 1]
    assert strip(m["per_image"]) == strip(kept)
    assert m["psnr"] == pytest.approx(np.mean([r["psnr"] for r in kept]), rel=1e-12)


@pytest.mark.e2e  # several in-process app runs (make test-e2e)
def test_cache_reuses_only_unchanged_images(tmp_path, caplog):
    """Replace one image under the same name and add one: only those two are computed again, and the
    rows and means equal a fresh run's. Then insert an image that sorts first: every index shifts,
    so every image is computed again (an index keys its noise), still equal to a fresh run."""
    eval_faces, prior_faces = faces(), faces("prior")
    folder = write_folder(tmp_path / "images", {"b": eval_faces[0], "c": eval_faces[1], "d": eval_faces[2]})
    cache = [f"eval.cache_dir={tmp_path / 'cache'}", "dataset=folder", f"dataset.root={folder}"]
    reconstruct(tmp_path, "first", *cache)
    store_dir = next((tmp_path / "cache" / "inpaint").iterdir()) / "t0_0.5"
    kept = {i: (store_dir / f"0000{i}.json").read_bytes() for i in (0, 2)}

    write_folder(folder, {"c": prior_faces[0], "e": eval_faces[3]})  # c replaced, e added (sorts last)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ccdf"):
        m = reconstruct(tmp_path, "second", *cache)
    assert "resuming: 2 of 4 (image, t0) results" in caplog.text
    assert {i: (store_dir / f"0000{i}.json").read_bytes() for i in (0, 2)} == kept  # b and d not recomputed
    fresh = reconstruct(tmp_path, "fresh", *cache[1:], f"eval.cache_dir={tmp_path / 'fresh_cache'}")
    assert strip(m["per_image"]) == strip(fresh["per_image"])
    assert (m["psnr"], m["ssim"], m["init_psnr"]) == (fresh["psnr"], fresh["ssim"], fresh["init_psnr"])
    assert (store_dir.parent / "gt" / "00001.png").read_bytes() == (
        next((tmp_path / "fresh_cache" / "inpaint").iterdir()) / "gt" / "00001.png"
    ).read_bytes()  # the ground-truth preview of the replaced image is the new one

    write_folder(folder, {"a": prior_faces[1]})  # sorts first: b..e move to indices 1..4
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ccdf"):
        m = reconstruct(tmp_path, "third", *cache)
    assert "resuming:" not in caplog.text
    fresh = reconstruct(tmp_path, "fresh2", *cache[1:], f"eval.cache_dir={tmp_path / 'fresh_cache2'}")
    assert strip(m["per_image"]) == strip(fresh["per_image"]) and m["psnr"] == fresh["psnr"]
