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

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GUIDED_FLAGS",
    "AttentionBlock",
    "Downsample",
    "GroupNorm32",
    "GuidedUNet",
    "ResBlock",
    "Upsample",
    "guided_flags_to_kwargs",
    "guided_unet_config",
    "iddpm_flags_to_kwargs",
    "qkv_attention",
    "timestep_embedding",
]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    r"""Sinusoidal embedding of (possibly fractional) timesteps, cosines first.

    ``freqs_i = exp(-ln(max_period) * i / half)`` for ``i < half = dim // 2`` and
    ``emb = [cos(t * freqs), sin(t * freqs)]``, zero-padded by one column when ``dim`` is odd.
    Computed in float32 whatever the input dtype, as in guided-diffusion's ``nn.timestep_embedding``.

    Args:
        timesteps: ``[B]`` chain indices (int or float).
        dim: embedding width.
        max_period: controls the lowest frequency.

    Returns:
        ``[B, dim]`` float32 embedding.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32 groups, eps 1e-5) evaluated in at least float32, cast back to the input dtype.

    Half-precision inputs are normalised in float32, as guided-diffusion's ``GroupNorm32`` does;
    float64 inputs stay float64 (where the official layer would fail on mixed dtypes).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``[B, C, ...]``; the result has the dtype of ``x``."""
        dt = _at_least_float32(x.dtype)
        weight = None if self.weight is None else self.weight.to(dt)
        bias = None if self.bias is None else self.bias.to(dt)
        return F.group_norm(x.to(dt), self.num_groups, weight, bias, self.eps).to(x.dtype)


def qkv_attention(qkv: Tensor, num_heads: int, legacy: bool = True) -> Tensor:
    r"""Multi-head dot-product attention over the last axis of packed ``qkv``.

    Each head computes ``softmax((q / c^{1/4})^T (k / c^{1/4})) v`` with ``c`` channels per head;
    the softmax is taken in (at least) float32. The two layouts of guided-diffusion differ only in how the
    ``3C`` channels are split:

    * ``legacy=True`` (``QKVAttentionLegacy``, and IDDPM's attention): heads first, i.e. the
      channels are ``[head_0: q k v, head_1: q k v, ...]``;
    * ``legacy=False`` (``QKVAttention``, ``use_new_attention_order``): q, k, v first, i.e.
      ``[q: head_0 head_1 ..., k: ..., v: ...]``.

    Args:
        qkv: ``[B, 3 * H * c, T]`` packed queries, keys and values.
        num_heads: ``H``.
        legacy: channel layout, see above.

    Returns:
        ``[B, H * c, T]`` attended values.
    """
    b, width, length = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"qkv width {width} is not divisible by 3 * num_heads = {3 * num_heads}")
    c = width // (3 * num_heads)
    if legacy:
        q, k, v = qkv.reshape(b * num_heads, 3 * c, length).split(c, dim=1)
    else:
        q, k, v = (part.reshape(b * num_heads, c, length) for part in qkv.chunk(3, dim=1))
    scale = c**-0.25  # applied to q and k separately (friendlier to fp16 than one 1/sqrt(c))
    logits = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weights = torch.softmax(logits, dim=-1, dtype=_at_least_float32(logits.dtype)).to(logits.dtype)
    out = torch.einsum("bts,bcs->bct", weights, v)
    return out.reshape(b, -1, length)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by an optional 3x3 conv (key ``conv``).

    Args:
        channels: input and output channels ``C``.
        use_conv: apply ``Conv2d(C, C, 3, padding=1)`` after upsampling.
    """

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.channels = channels
        self.conv: nn.Conv2d | None = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else None

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, C, 2H, 2W]``."""
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Downsample(nn.Module):
    """x2 downsampling by a stride-2 3x3 conv, or by 2x2 average pooling (key ``op``).

    Args:
        channels: input and output channels ``C``.
        use_conv: use ``Conv2d(C, C, 3, stride=2, padding=1)``; else ``AvgPool2d(2)``.
    """

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.channels = channels
        self.op: nn.Module = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, C, H/2, W/2]``."""
        return self.op(x)


class ResBlock(nn.Module):
    r"""Residual block conditioned on the time embedding, optionally resampling by 2.

    ``h = conv(resample(SiLU(GN(x))))``; then either ``h = GN(h) * (1 + scale) + shift``
    (``use_scale_shift_norm``, FiLM with ``scale, shift = Linear(SiLU(emb)).chunk(2)``) or
    ``h = GN(h + Linear(SiLU(emb)))``; then ``h = conv(Dropout(SiLU(h)))`` and the output is
    ``skip(resample(x)) + h``. ``skip`` is a 1x1 conv when the channel count changes, else the
    identity. The last conv is zero-initialised (as in the official code), so a fresh block is
    the identity map.

    Args:
        channels: input channels.
        emb_channels: width of the time embedding.
        out_channels: output channels (default ``channels``).
        dropout: dropout rate before the last conv.
        use_scale_shift_norm: FiLM conditioning (``emb_layers.1`` has ``2 * out_channels`` rows).
        up: upsample x2 (nearest) inside the block.
        down: downsample x2 (average pooling) inside the block.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a ResBlock cannot both upsample and downsample")
        out_channels = out_channels or channels
        self.channels = channels
        self.out_channels = out_channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = "up" if up else "down" if down else None

        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection: nn.Module = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``[B, channels, H, W]`` features.
            emb: ``[B, emb_channels]`` time (and class) embedding.

        Returns:
            ``[B, out_channels, H', W']`` with ``H' = 2H``, ``H/2`` or ``H`` for up/down/neither.
        """
        norm_act, conv_in = self.in_layers[:-1], self.in_layers[-1]
        h = conv_in(self._resample(norm_act(x)))
        x = self._resample(x)

        cond = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        norm_out, rest_out = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = cond.chunk(2, dim=1)
            h = norm_out(h) * (1 + scale) + shift
        else:
            h = norm_out(h + cond)
        h = rest_out(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Residual self-attention over all spatial positions (keys ``norm``, ``qkv``, ``proj_out``).

    ``qkv`` and ``proj_out`` are 1x1 ``Conv1d`` layers, as in the checkpoints (weights
    ``[3C, C, 1]`` and ``[C, C, 1]``). ``proj_out`` is zero-initialised.

    Args:
        channels: feature channels ``C``.
        num_heads: number of heads, used when ``num_head_channels == -1``.
        num_head_channels: channels per head; when not -1 it wins over ``num_heads``.
        use_new_attention_order: split q/k/v before heads (``QKVAttention``) instead of the
            legacy heads-before-q/k/v order (``QKVAttentionLegacy``); see :func:`qkv_attention`.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_head_channels != -1:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            num_heads = channels // num_head_channels
        self.channels = channels
        self.num_heads = num_heads
        self.legacy = not use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``: ``x + proj_out(attention(qkv(GN(x))))``."""
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(x)), self.num_heads, legacy=self.legacy)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that also hands the time embedding to its :class:`ResBlock` children."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        """Apply the children in order; ``emb`` is ``[B, 4 * model_channels]``."""
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


class GuidedUNet(nn.Module):
    r"""The ADM / IDDPM U-Net of guided-diffusion, ``state_dict``-compatible with its checkpoints.

    Arguments mirror ``guided_diffusion.unet.UNetModel`` (2-D only). Use
    :func:`guided_unet_config` for the published checkpoints or :func:`guided_flags_to_kwargs`
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

    @classmethod
    def from_preset(cls, name: str) -> GuidedUNet:
        """Build one of the published architectures; see :func:`guided_unet_config`."""
        return cls(**guided_unet_config(name))

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


def iddpm_flags_to_kwargs(
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    learn_sigma: bool = False,
    class_cond: bool = False,
    use_checkpoint: bool = False,
    attention_resolutions: str | int | Sequence[int] = "16,8",
    num_heads: int = 4,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = True,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """Translate openai/improved-diffusion ``create_model`` flags into ``GuidedUNet`` kwargs.

    IDDPM's U-Net is the guided one with conv resampling, no ``num_head_channels`` and the
    legacy attention layout. Defaults are IDDPM's ``model_and_diffusion_defaults``. Note that
    IDDPM's *diffusion* defaults ``rescale_timesteps=True``: such models expect
    ``t * 1000 / diffusion_steps`` as their time input.

    Returns:
        Keyword arguments for :class:`GuidedUNet`.
    """
    del use_checkpoint
    defaults = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
    if image_size not in defaults:
        raise ValueError(f"IDDPM has no channel_mult for image_size {image_size}")
    return dict(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(image_size // r for r in _parse_resolutions(attention_resolutions)),
        dropout=dropout,
        channel_mult=defaults[image_size],
        conv_resample=True,
        num_classes=1000 if class_cond else None,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=False,
        num_heads=num_heads,
        num_head_channels=-1,
        num_heads_upsample=num_heads_upsample,
        use_new_attention_order=False,
    )


#: Published architectures as guided-diffusion flags (docs/CHECKPOINTS.md section 1.1).
GUIDED_FLAGS: dict[str, dict[str, Any]] = {
    # ILVR / DPS / MCG / P2 "ffhq_10m.pt" and "afhq_dog_4m.pt" (93.6M parameters).
    "ffhq256": dict(
        image_size=256,
        num_channels=128,
        num_res_blocks=1,
        channel_mult="",
        learn_sigma=True,
        class_cond=False,
        attention_resolutions="16",
        num_heads=4,
        num_head_channels=64,
        num_heads_upsample=-1,
        use_scale_shift_norm=True,
        dropout=0.0,
        resblock_updown=True,
        use_new_attention_order=False,
    ),
    # guided-diffusion "256x256_diffusion_uncond.pt" (= DPS "imagenet256.pt", 552.8M parameters).
    "adm256_uncond": dict(
        image_size=256,
        num_channels=256,
        num_res_blocks=2,
        channel_mult="",
        learn_sigma=True,
        class_cond=False,
        attention_resolutions="32,16,8",
        num_heads=4,
        num_head_channels=64,
        num_heads_upsample=-1,
        use_scale_shift_norm=True,
        dropout=0.0,
        resblock_updown=True,
        use_new_attention_order=False,
    ),
}
GUIDED_FLAGS["afhq_dog256"] = dict(GUIDED_FLAGS["ffhq256"])  # same architecture as ffhq_10m.pt
GUIDED_FLAGS["imagenet256_uncond"] = dict(GUIDED_FLAGS["adm256_uncond"])  # DPS's name for the same file


def guided_unet_config(name: str) -> dict[str, Any]:
    """``GuidedUNet`` kwargs of a published checkpoint's architecture.

    Args:
        name: one of ``GUIDED_FLAGS``: ``"ffhq256"`` (= ``"afhq_dog256"``) or
            ``"adm256_uncond"`` (= ``"imagenet256_uncond"``).

    Returns:
        A fresh dict of keyword arguments for :class:`GuidedUNet`.
    """
    if name not in GUIDED_FLAGS:
        raise KeyError(f"unknown guided UNet preset {name!r}; choose from {sorted(GUIDED_FLAGS)}")
    return guided_flags_to_kwargs(**GUIDED_FLAGS[name])
