r"""Building blocks of guided-diffusion's ADM U-Net (:mod:`ccdf.nets.guided_unet`), key-compatible with its checkpoints.

Time embedding, ``GroupNorm32``, the two attention layouts, Up/Downsample, the time-conditioned
``ResBlock`` and the ``AttentionBlock`` of ``guided_diffusion.unet`` (openai/guided-diffusion @ 22e0df8),
with the official module names (the ``state_dict`` keys).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionBlock",
    "Downsample",
    "EmbedSequential",
    "GroupNorm32",
    "ResBlock",
    "Upsample",
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
