"""Train a small learned initializer (RRDBNet for x4 SR, fastMRI U-Net for MRI) and beat its classical one.

    python experiments/train_initializer.py --task sr4 --minutes 4    # -> outputs/initializers/sr4.safetensors
    python experiments/train_initializer.py --task mri --minutes 4    # -> outputs/initializers/mri.safetensors

Training data: the bundled *prior* split (6 FFHQ faces / 3 knee magnitude images) as random crops
with flips (ccdf.data.augment.RandomCropFlip); pairs (net input, target) are made on the fly by
ccdf.lightning.InitializerModule from y = A x0 through the same mapping the initializer uses at
inference. SR trains on 64 x 64 crops (16 x 16 inputs), MRI on 160 x 160 crops of the 320 slices,
each with its own random x4 Cartesian mask at that size; the nets are fully convolutional and run
at 256 / 320 afterwards.
L1 loss only (no perceptual / adversarial terms). The RRDBNet starts at smooth interpolation
(ccdf.lightning.initializer_module.rrdbnet_interpolation_init_; ``--init random`` for BasicSR's
random init), which is what makes a few CPU minutes enough.

Evaluation: the held-out *eval* split (4 faces / 1 knee slice), noise-free measurements with the
operator of ``task=sr4`` / ``task=mri``, PSNR of the learned initializer (loaded from the saved
file, exactly as ``run.py`` loads it) against the classical one (bicubic / zero-filled), scored
as the app scores x_init. The weights are saved as a ccdf safetensors file with their config;
use them with

    python run.py task=sr4 initializer=esrgan initializer.preset=null \
        initializer.ckpt=outputs/initializers/sr4.safetensors
    python run.py task=mri initializer=unet initializer.preset=null \
        initializer.ckpt=outputs/initializers/mri.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch

from ccdf.checkpoints import build_net, save_checkpoint
from ccdf.data import bundled_samples, stack_images, to_unit
from ccdf.data.augment import RandomCropFlip
from ccdf.initializers import Bicubic, PseudoInverse
from ccdf.initializers.learned import ESRGANInitializer, UNetInitializer
from ccdf.lightning.data import StepDataModule
from ccdf.lightning.initializer_module import InitializerModule, rrdbnet_interpolation_init_
from ccdf.metrics import psnr
from ccdf.operators import SingleCoilMRI, SuperResolution, measure
from ccdf.utils.rng import per_sample_generators

# Operators of conf/operator/superres.yaml (task=sr4) and conf/operator/mri_cartesian.yaml (task=mri).
SR_FACTOR = 4
MRI = dict(acceleration=4, center_fraction=0.08, pattern="uniform")
MRI_SIZE = 320

TASKS = {
    "sr4": dict(
        family="rrdbnet",
        config=dict(num_in_ch=3, num_out_ch=3, scale=SR_FACTOR, num_feat=32, num_block=2, num_grow_ch=16),
        crop=64, batch=4, lr=1e-3,
    ),
    "mri": dict(
        family="fastmri_unet",
        config=dict(in_chans=1, out_chans=1, chans=16, num_pool_layers=4, drop_prob=0.0),
        crop=160, batch=4, lr=2e-3,
    ),
}  # fmt: skip


def mri_mask_sampler(size: int):
    """One random x4 Cartesian mask per training item, seeded from the item's generator."""

    def sample(g: torch.Generator) -> SingleCoilMRI:
        seed = int(torch.randint(2**31 - 1, (), generator=g))
        return SingleCoilMRI.cartesian(size, seed=seed, **MRI)

    return sample


def training_data(task: str, crop: int | None, length: int, seed: int) -> RandomCropFlip:
    if task == "sr4":
        return RandomCropFlip(bundled_samples("ffhq", "prior", size=256), crop, length=length, seed=seed)
    base = bundled_samples("fastmri_knee", "prior", size=MRI_SIZE)
    return RandomCropFlip(base, crop, length=length, seed=seed, hflip=True, vflip=True)


@torch.no_grad()
def evaluate(task: str, ckpt: Path, seed: int = 0) -> dict[str, list[float]]:
    """Held-out PSNRs (dB) per image: the learned initializer from ``ckpt`` and the classical ones."""
    if task == "sr4":
        x0 = stack_images(bundled_samples("ffhq", "eval", size=256))
        op = SuperResolution(SR_FACTOR, kernel="bicubic")
        inits = {"learned (ESRGAN)": ESRGANInitializer(ckpt, scale=SR_FACTOR, preset=None),
                 "bicubic": Bicubic(), "pinv": PseudoInverse()}  # fmt: skip
    else:
        x0 = stack_images(bundled_samples("fastmri_knee", "eval", size=MRI_SIZE))
        op = SingleCoilMRI.cartesian(MRI_SIZE, seed=0, **MRI)
        inits = {"learned (U-Net)": UNetInitializer(ckpt, preset=None), "zero-filled": PseudoInverse()}
    y = measure(op, x0, 0.0, per_sample_generators(seed, range(len(x0))))
    out = {}
    for name, init in inits.items():
        x_init = init(y, op)
        if torch.is_complex(x0):  # as ccdf.app scores MRI: magnitudes, range = max |x0|
            ref, data_range, est = x0.abs(), x0.abs().flatten(1).amax(1), x_init.abs()
        else:
            ref, data_range, est = to_unit(x0), torch.ones(1), to_unit(x_init)
        out[name] = psnr(est, ref, data_range).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--minutes", type=float, default=4.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=None, help="default 4")
    parser.add_argument("--crop", type=int, default=None, help="training crop (default 64 sr4, 160 mri)")
    parser.add_argument("--lr", type=float, default=None, help="Adam lr (default 1e-3 sr4, 2e-3 mri)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay (0: off)")
    parser.add_argument("--sigma-y", type=float, default=0.0, help="training measurement noise std")
    parser.add_argument("--init", choices=["interp", "random"], default="interp",
                        help="sr4: start the RRDBNet at interpolation (default) or at its random init")  # fmt: skip
    parser.add_argument("--fixed-mask", action="store_true", help="mri: train with the evaluation mask only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default outputs/initializers/<task>.safetensors")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = TASKS[args.task]
    batch = args.batch or spec["batch"]
    crop = args.crop if args.crop is not None else spec["crop"]
    lr = args.lr or spec["lr"]
    out = args.out or Path("outputs/initializers") / f"{args.task}.safetensors"
    L.seed_everything(args.seed, verbose=False)

    family, config = spec["family"], spec["config"]
    net = build_net(family, config)
    if args.task == "sr4":
        if args.init == "interp":
            rrdbnet_interpolation_init_(net)
        operator = SuperResolution(SR_FACTOR, kernel="bicubic")
    else:
        size = crop or MRI_SIZE
        operator = SingleCoilMRI.cartesian(size, seed=0, **MRI) if args.fixed_mask else mri_mask_sampler(size)
    module = InitializerModule(net, family, operator, sigma_y=args.sigma_y, warmup_steps=args.warmup,
                               ema_decay=args.ema, seed=args.seed,
                               optimizer=lambda p: torch.optim.Adam(p, lr=lr))  # fmt: skip
    data = StepDataModule(training_data(args.task, crop, args.max_steps * batch, args.seed),
                          global_batch=batch, max_steps=args.max_steps, seed=args.seed)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.max_steps, max_time={"minutes": args.minutes},
                        logger=False, enable_checkpointing=False, gradient_clip_val=1.0, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    tic = time.perf_counter()
    trainer.fit(module, datamodule=data)
    minutes = (time.perf_counter() - tic) / 60
    net.load_state_dict(module.averaged_state_dict())
    save_checkpoint(out, net, layout="ccdf", family=family, config=config)
    num_params = sum(p.numel() for p in net.parameters())
    print(f"task={args.task}: trained {trainer.global_step} steps of batch {batch} (crop {crop or 'full'}, "
          f"lr {lr:g}) in {minutes:.1f} min; {family} {config} ({num_params:,} parameters) -> {out}")  # fmt: skip

    scores = evaluate(args.task, out, args.seed)
    print("held-out PSNR (dB): " + ", ".join(f"{k} {sum(v) / len(v):.2f}" for k, v in scores.items()))
    for k, v in scores.items():
        print(f"  {k:>18}: " + " ".join(f"{p:.2f}" for p in v))
    names = list(scores)
    learned, classical = sum(scores[names[0]]) / len(scores[names[0]]), sum(scores[names[1]]) / len(scores[names[1]])
    verdict = "PASS" if learned > classical else "FAIL"
    print(f"{verdict}: learned {learned:.2f} dB vs {names[1]} {classical:.2f} dB ({learned - classical:+.2f} dB)")
    name = "esrgan" if args.task == "sr4" else "unet"
    print(f"use it: python run.py task={args.task} initializer={name} initializer.preset=null initializer.ckpt={out}")


if __name__ == "__main__":
    main()
