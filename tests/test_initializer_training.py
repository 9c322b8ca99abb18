"""Training learned initializers: the loss falls, training and inference share one mapping, checkpoints round-trip."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from ccdf.checkpoints import build_net, save_checkpoint
from ccdf.data.augment import RandomCropFlip
from ccdf.initializers.learned import MAPPINGS, ESRGANInitializer, UNetInitializer
from ccdf.lightning.data import StepDataModule
from ccdf.lightning.initializer_module import InitializerModule, rrdbnet_interpolation_init_
from ccdf.operators import SingleCoilMRI, SuperResolution, measure
from ccdf.training.losses import initializer_l1_loss
from tests.helpers import ROOT, gen

RRDB = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
UNET = dict(in_chans=1, out_chans=1, chans=4, num_pool_layers=2, drop_prob=0.0)
MRI = dict(acceleration=4, center_fraction=0.125)


class Smooth(torch.utils.data.Dataset):
    """Smooth random images (low-pass noise): learnable in a few steps."""

    kind = "image"

    def __init__(self, n: int, channels: int, size: int, complex_: bool = False) -> None:
        z = torch.randn(n, channels, size // 4, size // 4, generator=gen(7))
        x = torch.nn.functional.interpolate(z, size=(size, size), mode="bicubic", align_corners=False)
        x = x / x.abs().amax(dim=(1, 2, 3), keepdim=True)
        self.x = x.abs().to(torch.complex64) if complex_ else x
        self.channels = channels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x0": self.x[i], "index": i, "name": str(i)}


def mask_sampler(size: int):
    def sample(g: torch.Generator) -> SingleCoilMRI:
        return SingleCoilMRI.cartesian(size, seed=int(torch.randint(2**31 - 1, (), generator=g)), **MRI)

    return sample


def make_module(family: str, seed: int = 0, lr: float = 3e-3, sigma_y: float = 0.0) -> InitializerModule:
    torch.manual_seed(seed)
    if family == "rrdbnet":
        net, op = build_net("rrdbnet", RRDB), SuperResolution(4)
    else:
        net, op = build_net("fastmri_unet", UNET), mask_sampler(16)
    return InitializerModule(net, family, op, sigma_y=sigma_y, warmup_steps=3, seed=seed,
                             optimizer=lambda p: torch.optim.Adam(p, lr=lr))  # fmt: skip


def fit(module: InitializerModule, dataset, steps: int, batch: int = 4) -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        gradient_clip_val=1.0, enable_progress_bar=False, enable_model_summary=False,
                        use_distributed_sampler=False)  # fmt: skip
    trainer.fit(module, datamodule=StepDataModule(dataset, global_batch=batch, max_steps=steps, seed=0))


def held_loss(module: InitializerModule, x0: torch.Tensor) -> float:
    gens = [gen(100 + i) for i in range(len(x0))]
    with torch.no_grad():
        inputs, target = module.make_pairs(x0, gens)
        return float(initializer_l1_loss(module.net, inputs, target).mean())


@pytest.mark.parametrize("family", ["rrdbnet", "fastmri_unet"])
def test_training_loss_falls(family):
    data = Smooth(8, 3, 16) if family == "rrdbnet" else Smooth(8, 1, 16, complex_=True)
    module = make_module(family)
    x0 = torch.stack([data[i]["x0"] for i in range(4)])
    before = held_loss(module, x0)
    fit(module, data, steps=30)
    after = held_loss(module, x0)
    assert after < 0.7 * before, (before, after)


def test_augmented_crops_are_a_pure_function_of_seed_and_index():
    base = Smooth(3, 3, 16)
    a, b = RandomCropFlip(base, 8, length=50, seed=1), RandomCropFlip(base, 8, length=50, seed=1)
    assert len(a) == 50 and a[7]["x0"].shape == (3, 8, 8)
    torch.testing.assert_close(a[7]["x0"], b[7]["x0"])
    assert any(not torch.equal(a[i]["x0"], RandomCropFlip(base, 8, length=50, seed=2)[i]["x0"]) for i in range(10))
    with pytest.raises(IndexError):
        a[50]


def _recorded_input(net: torch.nn.Module, call) -> torch.Tensor:
    seen = []
    handle = net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        call()
    finally:
        handle.remove()
    return seen[0]


def test_training_inputs_are_what_the_initializers_feed_the_net(tmp_path):
    # SR: the module's net input for y = A x0 is exactly the ESRGAN initializer's net input
    module = make_module("rrdbnet")
    save_checkpoint(tmp_path / "sr.safetensors", module.net, layout="ccdf", family="rrdbnet", config=RRDB)
    init = ESRGANInitializer(tmp_path / "sr.safetensors", scale=4, preset=None)
    op = SuperResolution(4)
    x0 = Smooth(2, 3, 16).x
    inputs, target = module.make_pairs(x0, [gen(0), gen(1)])
    seen = _recorded_input(init.net, lambda: init(op(x0), op))
    torch.testing.assert_close(seen, inputs, rtol=0, atol=0)
    # a net that outputs its target exactly gives x0 back
    torch.testing.assert_close(MAPPINGS["rrdbnet"].decode(target, (x0.device, x0.dtype)), x0)

    # MRI: the same with a fixed mask, complex images and the U-Net
    op = SingleCoilMRI.cartesian(16, seed=3, **MRI)
    net = build_net("fastmri_unet", UNET)
    module = InitializerModule(net, "fastmri_unet", op)
    save_checkpoint(tmp_path / "mri.safetensors", net, layout="ccdf", family="fastmri_unet", config=UNET)
    init = UNetInitializer(tmp_path / "mri.safetensors", preset=None)
    x0 = torch.polar(Smooth(2, 1, 16).x.abs(), torch.rand(2, 1, 16, 16, generator=gen(5)))
    inputs, target = module.make_pairs(x0, [gen(0), gen(1)])
    seen = _recorded_input(init.net, lambda: init(op(x0), op))
    torch.testing.assert_close(seen, inputs, rtol=0, atol=0)
    y = op(x0)
    _, ctx = MAPPINGS["fastmri_unet"].encode(y, op)
    perfect = MAPPINGS["fastmri_unet"].decode(target, ctx)  # |x0| with the zero-filled phase
    torch.testing.assert_close(perfect.abs(), x0.abs(), atol=1e-5, rtol=1e-5)


def test_noisy_pairs_follow_measure():
    module = make_module("rrdbnet", sigma_y=0.1)
    x0 = Smooth(2, 3, 16).x
    inputs, _ = module.make_pairs(x0, [gen(0), gen(1)])
    y = measure(SuperResolution(4), x0, 0.1, [gen(0), gen(1)])
    torch.testing.assert_close(inputs, MAPPINGS["rrdbnet"].encode(y, SuperResolution(4))[0])


def compose_initializer(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    GlobalHydra.instance().clear()
    return instantiate(cfg.initializer, _convert_="all")


def test_checkpoint_round_trips_into_the_initializers(tmp_path):
    # SR: a few steps of training, saved as ccdf, loaded through conf/initializer/esrgan.yaml
    module = make_module("rrdbnet")
    rrdbnet_interpolation_init_(module.net)
    fit(module, Smooth(8, 3, 16), steps=3)
    path = tmp_path / "sr4.safetensors"
    save_checkpoint(path, module.net, layout="ccdf", family="rrdbnet", config=RRDB)
    init = compose_initializer(
        ["task=sr4", "initializer=esrgan", "initializer.preset=null", f"initializer.ckpt={path}"]
    )
    assert isinstance(init, ESRGANInitializer)
    op = SuperResolution(4)
    y = op(Smooth(2, 3, 32).x)  # another size than in training: the nets are fully convolutional
    torch.testing.assert_close(init(y, op), module.initialize(y, op), rtol=0, atol=0)

    # MRI: through conf/initializer/unet.yaml (its chans=256 is ignored with preset=null)
    module = make_module("fastmri_unet")
    fit(module, Smooth(8, 1, 16, complex_=True), steps=3)
    path = tmp_path / "mri.safetensors"
    save_checkpoint(path, module.net, layout="ccdf", family="fastmri_unet", config=UNET)
    init = compose_initializer(["task=mri", "initializer=unet", "initializer.preset=null", f"initializer.ckpt={path}"])
    assert isinstance(init, UNetInitializer)
    op = SingleCoilMRI.cartesian(16, seed=0, **MRI)
    y = op(torch.polar(Smooth(2, 1, 16).x.abs(), torch.rand(2, 1, 16, 16, generator=gen(9))))
    torch.testing.assert_close(init(y, op), module.initialize(y, op), rtol=0, atol=0)


def test_interpolation_init_starts_near_bilinear():
    net = rrdbnet_interpolation_init_(build_net("rrdbnet", RRDB)).eval()
    x0 = Smooth(2, 3, 32).x * 0.5  # inside [-1, 1]
    op = SuperResolution(4)
    with torch.no_grad():
        out = MAPPINGS["rrdbnet"](net, op(x0), op)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # away from the zero-padded border
    ref = torch.nn.functional.interpolate(op(x0), scale_factor=4, mode="bilinear", align_corners=False)
    assert float((out - ref)[inner].abs().mean()) < 0.05
