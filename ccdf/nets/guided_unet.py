r"""ADM U-Net of guided-diffusion (Dhariwal & Nichol, 2021), key-compatible with its checkpoints.

A re-implementation of ``guided_diffusion.unet.UNetModel`` (openai/guided-diffusion @ 22e0df8)
that loads the official ``state_dict`` files strictly (same module names, same shapes) and
reproduces the official forward pass in float32. It also covers the IDDPM U-Net of
openai/improved-diffusion (Nichol & Dhariwal, 2021): an IDDPM checkpoint is a guided model with
``resblock_updown=False``, ``num_head_channels=-1`` and the legacy attention order
(see :func:`iddpm_flags_to_kwargs`).

Only the 2-D network is implemented. Gradient checkpointing (``use_checkpoint``) and the fp16
torso (``use_fp16``) of the official code are runtime options that do not change the weights;
use ``torch.autocast`` instead. Checkpoints on disk are float32 either way.

Module tree (the official names, which are the ``state_dict`` keys)::

    time_embed.{0,2}           Linear(mc, 4mc), Linear(4mc, 4mc)   (1 = SiLU)
    label_emb                  Embedding(num_classes, 4mc)         (class-conditional only)
    input_blocks.0.0           Conv2d(in_channels, ch0, 3)
    input_blocks.k.{0,1}       ResBlock [+ AttentionBlock]  |  ResBlock(down) or Downsample (.op)
    middle_block.{0,1,2}       ResBlock, AttentionBlock, ResBlock
    output_blocks.k.{0,1,2}    ResBlock(ch + skip) [+ AttentionBlock] [+ ResBlock(up) or Upsample (.conv)]
    out.{0,2}                  GroupNorm32, Conv2d(ch0, out_channels, 3)   (1 = SiLU)

The network takes the *index* of the original diffusion chain as its time input (an integer
0..999 for all guided checkpoints, a float ``t * 1000 / T`` for IDDPM models trained with
``rescale_timesteps=True``). Mapping continuous time to that index is the denoiser adapter's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.nets.guided_blocks import (
    AttentionBlock,
    Downsample,
    EmbedSequential,
    GroupNorm32,
    ResBlock,
    Upsample,
    qkv_attention,
    timestep_embedding,
)

__all__ = [
    "AttentionBlock",
    "Downsample",
    "GroupNorm32",
    "IDDPM_DEFAULTS",
    "GuidedUNet",
    "ResBlock",
    "Upsample",
    "guided_flags_to_kwargs",
    "iddpm_flags_to_kwargs",
    "qkv_attention",
    "timestep_embedding",
]


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class GuidedUNet(nn.Module):
    r"""The ADM / IDDPM U-Net of guided-diffusion, ``state_dict``-compatible with its checkpoints.

    Arguments mirror ``guided_diffusion.unet.UNetModel`` (2-D only). Use
    :func:`ccdf.checkpoints.guided_unet_config` for the published checkpoints or :func:`guided_flags_to_kwargs`
    for guided-diffusion's command-line flags.

    Args:
        image_size: nominal input resolution (stored only; the net is fully convolutional,
            but ``H, W`` must be divisible by ``2 ** (len(channel_mult) - 1)``).
        in_channels: channels of ``x``.
        model_channels: base width ``mc``; the time embedding has ``4 * mc`` channels.
        out_channels: output channels (``2 * in_channels`` for learned-sigma models: eps, then
            the variance interpolation ``v``).
        num_res_blocks: ResBlocks per level on the way down (one more per level on the way up).
        attention_resolutions: downsample rates ``ds`` at which attention is used (guided's
            ``create_model`` turns the flag "32,16,8" into ``image_size // r`` for each ``r``).
        dropout: dropout rate in every ResBlock.
        channel_mult: width multiplier per level; level ``i`` has ``int(channel_mult[i] * mc)``.
        conv_resample: plain Up/Downsample layers use a 3x3 conv (ignored with ``resblock_updown``).
        num_classes: number of classes for a class-conditional model (adds ``label_emb``).
        use_scale_shift_norm: FiLM-style conditioning in the ResBlocks.
        resblock_updown: resample with ResBlocks instead of Up/Downsample layers.
        num_heads: attention heads (used when ``num_head_channels == -1``).
        num_head_channels: fixed channels per head; overrides ``num_heads`` when not -1.
        num_heads_upsample: heads in the decoder's attention (-1: same as ``num_heads``).
        use_new_attention_order: q/k/v-first attention layout instead of the legacy one.

    Example:
        >>> net = GuidedUNet(image_size=8, in_channels=3, model_channels=32, out_channels=6,
        ...                  num_res_blocks=1, attention_resolutions=(2,), channel_mult=(1, 1))
        >>> net(torch.zeros(2, 3, 8, 8), torch.tensor([0, 999])).shape
        torch.Size([2, 6, 8, 8])
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes

        emb_ch = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_ch)

        def res(ch_in: int, ch_out: int | None = None, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch_in, emb_ch, ch_out, dropout, use_scale_shift_norm, up=up, down=down)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

        attn_ds = set(self.attention_resolutions)
        widths = [int(m * model_channels) for m in self.channel_mult]
        ch = widths[0]
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chs = [ch]  # channels of every input-block output, consumed in reverse by the decoder
        ds = 1
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, width)]
                ch = width
                if ds in attn_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_chs.append(ch)
            if level < len(widths) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
                self.input_blocks.append(EmbedSequential(down))
                skip_chs.append(ch)
                ds *= 2

        self.middle_block = EmbedSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chs.pop(), width)]
                ch = width
                if ds in attn_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level > 0 and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        # The official net sizes out.2's input by the first level's width (``input_ch``),
        # which is the decoder's final width ``ch`` as well.
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    @classmethod
    def from_flags(cls, **flags: Any) -> GuidedUNet:
        """Build from guided-diffusion ``create_model`` flags; see :func:`guided_flags_to_kwargs`."""
        return cls(**guided_flags_to_kwargs(**flags))

    def forward(self, x: Tensor, timesteps: Tensor | float, y: Tensor | None = None) -> Tensor:
        """Predict the network output (eps, or eps and the variance value ``v``) at ``x``.

        Args:
            x: ``[B, in_channels, H, W]`` noisy images, value range about ``[-1, 1]``.
            timesteps: ``[B]`` indices of the original diffusion chain (int or float), or a scalar
                applied to the whole batch.
            y: ``[B]`` integer class labels; required iff the model is class-conditional.

        Returns:
            ``[B, out_channels, H, W]`` (for ``out_channels == 2 * in_channels``: eps first, then ``v``).
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass y if and only if the model is class-conditional")
        t = torch.as_tensor(timesteps, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype))
        if y is not None:
            if y.shape != (x.shape[0],):
                raise ValueError(f"y must have shape [{x.shape[0]}], got {tuple(y.shape)}")
            emb = emb + self.label_emb(y)

        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


def _parse_resolutions(value: str | int | Iterable[int]) -> list[int]:
    if isinstance(value, str):
        return [int(r) for r in value.split(",") if r.strip()]
    if isinstance(value, int):
        return [value]
    return [int(r) for r in value]


def guided_flags_to_kwargs(
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    channel_mult: str | Sequence[float] = "",
    learn_sigma: bool = False,
    class_cond: bool = False,
    use_checkpoint: bool = False,
    attention_resolutions: str | int | Sequence[int] = "16",
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = False,
    use_fp16: bool = False,
    use_new_attention_order: bool = False,
) -> dict[str, Any]:
    """Translate guided-diffusion ``script_util.create_model`` flags into ``GuidedUNet`` kwargs.

    Same defaults and rules as ``create_model``: ``channel_mult=""`` picks the per-resolution
    default, a string like ``"1,1,2,2,4,4"`` is parsed, ``attention_resolutions`` (a string
    such as ``"32,16,8"``, an int as in DPS's YAML, or a list) lists feature-map *resolutions*
    and becomes downsample rates ``image_size // r``. ``use_checkpoint`` and ``use_fp16`` do not
    change the weights and are accepted and ignored.

    Returns:
        Keyword arguments for :class:`GuidedUNet` (``in_channels=3``, ``out_channels`` 3 or 6,
        ``num_classes`` 1000 or None).
    """
    del use_checkpoint, use_fp16
    if isinstance(channel_mult, str):
        if channel_mult == "":
            defaults: dict[int, tuple[float, ...]] = {
                512: (0.5, 1, 1, 2, 2, 4, 4),
                256: (1, 1, 2, 2, 4, 4),
                128: (1, 1, 2, 3, 4),
                64: (1, 2, 3, 4),
            }
            if image_size not in defaults:
                raise ValueError(f"no default channel_mult for image_size {image_size}")
            mult: tuple[float, ...] = defaults[image_size]
        else:
            mult = tuple(int(m) for m in channel_mult.split(","))
    else:
        mult = tuple(channel_mult)
    return dict(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(image_size // r for r in _parse_resolutions(attention_resolutions)),
        dropout=dropout,
        channel_mult=mult,
        conv_resample=True,
        num_classes=1000 if class_cond else None,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_new_attention_order=use_new_attention_order,
    )


#: openai/improved-diffusion ``model_and_diffusion_defaults`` of the U-Net flags (besides size, width, depth).
IDDPM_DEFAULTS: dict[str, Any] = dict(
    learn_sigma=False,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16,8",
    num_heads=4,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    dropout=0.0,
)


def iddpm_flags_to_kwargs(image_size: int, num_channels: int, num_res_blocks: int, **flags: Any) -> dict[str, Any]:
    """Translate openai/improved-diffusion ``create_model`` flags into ``GuidedUNet`` kwargs.

    IDDPM's U-Net is the guided one with conv resampling, no ``num_head_channels`` and the
    legacy attention layout. ``flags`` are those of :data:`IDDPM_DEFAULTS` (IDDPM's defaults fill the
    rest). Note that IDDPM's *diffusion* defaults ``rescale_timesteps=True``: such models expect
    ``t * 1000 / diffusion_steps`` as their time input.

    Returns:
        Keyword arguments for :class:`GuidedUNet`.
    """
    unknown = sorted(set(flags) - set(IDDPM_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown IDDPM flags {unknown}; known: {sorted(IDDPM_DEFAULTS)}")
    defaults = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
    if image_size not in defaults:
        raise ValueError(f"IDDPM has no channel_mult for image_size {image_size}")
    mult = defaults[image_size]
    return guided_flags_to_kwargs(image_size, num_channels, num_res_blocks, mult, **{**IDDPM_DEFAULTS, **flags})
