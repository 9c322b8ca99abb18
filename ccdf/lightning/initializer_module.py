"""Lightning training of a learned initializer (ESRGAN's RRDBNet for SR, fastMRI's U-Net for MRI).

Training pairs are made on the fly from clean images: ``y = A x0 (+ sigma_y n)``, the net's input
and target come from the *same* :class:`ccdf.initializers.learned.NetMapping` the initializer
calls at inference, and the loss is :func:`ccdf.training.losses.initializer_l1_loss` (ESRGAN's
pixel loss / fastMRI's U-Net loss). ESRGAN's perceptual (VGG) and adversarial terms are not
implemented: the nets trained here are PSNR-oriented (``RRDB_PSNR``-style), which is what an
initializer scored by PSNR wants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ccdf.initializers.learned import MAPPINGS, NetMapping
from ccdf.lightning.base import TrainingModule
from ccdf.operators.base import Operator, measure
from ccdf.training.losses import initializer_l1_loss

__all__ = ["InitializerModule", "OperatorSampler", "rrdbnet_interpolation_init_"]

#: A function drawing one operator per training item from that item's generator (e.g. MRI masks).
OperatorSampler = Callable[[torch.Generator], Operator]


class InitializerModule(TrainingModule):
    """Train a feed-forward initializer ``net`` with L1 on pairs made from clean images.

    Randomness (measurement noise, random operators) is a pure function of (seed, global step,
    data-set index), as in :class:`ccdf.lightning.diffusion_module.DiffusionModule`.

    Args:
        net: the initializer net (``RRDBNet`` or fastMRI ``Unet``).
        mapping: a :class:`NetMapping` or a family name (``"rrdbnet"`` / ``"fastmri_unet"``).
        operator: the measurement operator, or an :data:`OperatorSampler` drawing one per item.
        sigma_y: measurement noise std (model range), as ``ccdf.operators.measure``.
        optimizer: a factory of a torch optimizer from the parameters (default Adam, lr 2e-4).
        warmup_steps: linear learning-rate warm-up.
        ema_decay: EMA decay (0 disables the average).
        seed: the training seed.
    """

    def __init__(
        self,
        net: nn.Module,
        mapping: NetMapping | str,
        operator: Operator | OperatorSampler,
        *,
        sigma_y: float = 0.0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        warmup_steps: int = 0,
        ema_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(mapping, str):
            if mapping not in MAPPINGS:
                raise ValueError(f"unknown initializer family {mapping!r}; choose one of {sorted(MAPPINGS)}")
            mapping = MAPPINGS[mapping]
        self.save_hyperparameters(ignore=["net", "mapping", "operator", "optimizer"])
        self.setup_training(net, optimizer, ema_decay)
        self.mapping = mapping
        if isinstance(operator, Operator):
            self.operator, self.operator_sampler = operator, None
        else:
            self.operator, self.operator_sampler = None, operator

    def make_pairs(self, x0: Tensor, generators: list[torch.Generator]) -> tuple[Tensor, Tensor]:
        """``(net input, target)`` for clean images ``x0``, in the net's dtype."""
        param = next(iter(self.net.parameters()))
        sigma_y = float(self.hparams.sigma_y)
        if self.operator_sampler is None:
            y = measure(self.operator, x0, sigma_y, generators)
            inputs, ctx = self.mapping.encode(y, self.operator)
            target = self.mapping.target(x0, ctx)
        else:
            parts = []
            for b, g in enumerate(generators):
                op = self.operator_sampler(g).to(x0.device)
                y = measure(op, x0[b : b + 1], sigma_y, [g])
                inp, ctx = self.mapping.encode(y, op)
                parts.append((inp, self.mapping.target(x0[b : b + 1], ctx)))
            inputs, target = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return inputs.to(param.dtype), target.to(param.dtype)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0 = batch["x0"]
        inputs, target = self.make_pairs(x0, self.generators(batch["index"]))
        loss = initializer_l1_loss(self.net, inputs, target).mean()
        self.log_loss(loss, x0.shape[0])
        return loss

    @torch.no_grad()
    def initialize(self, y: Tensor, op: Operator) -> Tensor:
        """x_init from the current (raw) weights, exactly as the learned initializer computes it."""
        was_training = self.net.training
        self.net.eval()
        try:
            return self.mapping(self.net, y, op)
        finally:
            self.net.train(was_training)


@torch.no_grad()
def rrdbnet_interpolation_init_(net: nn.Module) -> nn.Module:
    """Start an RRDBNet at smooth interpolation, so short trainings begin from a sensible SR.

    RRDBNet has no image skip: from a random start it spends its first thousands of steps learning to
    up-sample at all. Here feature channels ``0 .. C-1`` carry the image: ``conv_first`` copies it,
    ``conv_body`` adds nothing to them (zero rows), every ``conv_up{k}`` (after its nearest x2)
    applies the ``[1, 2, 1]/4`` tent in both axes (nearest x2 + tent = bilinear x2), ``conv_hr``
    passes them on and ``conv_last`` reads them out; the other channels keep their random init and
    are read out with zero weights. The net then starts as (near-)bilinear x``scale`` up-sampling of
    inputs in ``[0, 1]`` (the LeakyReLUs see non-negative values there) and trains from that point.
    The architecture and state-dict keys are unchanged (an initialisation only).
    """
    c = net.conv_first.in_channels
    if getattr(net, "unshuffle", 1) != 1 or net.conv_last.out_channels != c:
        raise ValueError("interpolation init needs an RRDBNet with scale >= 4 and as many output as input channels")
    tent = torch.tensor([1.0, 2.0, 1.0]) / 4
    blur = tent[:, None] * tent[None, :]

    def rows(conv: nn.Conv2d, kernel: torch.Tensor | None) -> None:
        conv.weight[:c] = 0
        conv.bias[:c] = 0
        if kernel is not None:
            for k in range(c):
                conv.weight[k, k] = kernel

    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    rows(net.conv_first, delta)
    rows(net.conv_body, None)
    for k in range(1, net.num_up + 1):
        rows(getattr(net, f"conv_up{k}"), blur)
    rows(net.conv_hr, delta)
    net.conv_last.weight.zero_()
    net.conv_last.bias.zero_()
    for k in range(c):
        net.conv_last.weight[k, k] = delta
    return net
