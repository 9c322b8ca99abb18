r"""Layers of score_sde's NCSN++ (:mod:`ccdf.nets.ncsnpp`): FIR resampling and the network's blocks.

``upfirdn2d`` (StyleGAN2's FIR resampling op) in plain PyTorch, the Gaussian Fourier noise embedding,
``NIN``/``AttnBlockpp`` attention, the BigGAN-style residual block and the FIR pyramid downsampler of
yang-song/score_sde_pytorch ``models/layerspp.py``, with the official parameter names and registration order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttnBlockpp",
    "GaussianFourierProjection",
    "NIN",
    "PyramidDownsample",
    "ResnetBlockBigGANpp",
    "conv_downsample_2d",
    "downsample_2d",
    "upfirdn2d",
    "upsample_2d",
]


# --------------------------------------------------------------------------------------------------
# FIR resampling (StyleGAN2 upfirdn2d), pure PyTorch
# --------------------------------------------------------------------------------------------------


def upfirdn2d(x: Tensor, kernel: Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, filter with a 2-D FIR kernel, then decimate (StyleGAN2).

    The same factors and the same ``(before, after)`` padding are used along both spatial axes, as in
    score_sde's ``op.upfirdn2d``. Negative padding crops. The kernel is applied as a true convolution
    (flipped), channel by channel.

    Args:
        x: input ``[B, C, H, W]``.
        kernel: FIR taps ``[kh, kw]`` (same dtype/device as ``x`` or castable to it).
        up: upsampling factor (``up - 1`` zeros inserted after every sample).
        down: downsampling factor (every ``down``-th sample is kept).
        pad: ``(before, after)`` padding applied to the upsampled signal.

    Returns:
        ``[B, C, (H*up + pad0 + pad1 - kh) // down + 1, (W*up + pad0 + pad1 - kw) // down + 1]``.
    """
    batch, channels, height, width = x.shape
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    y = x.reshape(batch * channels, 1, height, width)
    if up > 1:
        spread = y.new_zeros(batch * channels, 1, height * up, width * up)
        spread[:, :, ::up, ::up] = y
        y = spread
    y = F.pad(y, (pad[0], pad[1], pad[0], pad[1]))
    y = F.conv2d(y, torch.flip(kernel, [0, 1])[None, None])
    y = y[:, :, ::down, ::down]
    return y.reshape(batch, channels, y.shape[-2], y.shape[-1])


def _fir_kernel(taps: Sequence[float], gain: float, like: Tensor) -> Tensor:
    """Separable FIR taps -> normalised 2-D kernel (sums to ``gain``), on ``like``'s device/dtype."""
    k1 = torch.as_tensor(list(taps), dtype=torch.float32)
    k2 = torch.outer(k1, k1)
    k2 = k2 / k2.sum() * gain
    return k2.to(device=like.device, dtype=like.dtype)


def upsample_2d(x: Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR upsampling ``[B, C, H, W] -> [B, C, factor*H, factor*W]`` preserving constant images."""
    kernel = _fir_kernel(taps, float(factor**2), x)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR downsampling ``[B, C, H, W] -> [B, C, H/factor, W/factor]`` preserving constant images."""
    kernel = _fir_kernel(taps, 1.0, x)
    p = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((p + 1) // 2, p // 2))


def conv_downsample_2d(x: Tensor, weight: Tensor, taps: Sequence[float] = (1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR blur then strided convolution, padded once (StyleGAN2 fused ``conv2d`` + ``downsample_2d``).

    Args:
        x: ``[B, C_in, H, W]``.
        weight: convolution weight ``[C_out, C_in, k, k]``, ``k`` odd.

    Returns:
        ``[B, C_out, H/factor, W/factor]`` (no bias added).
    """
    kernel = _fir_kernel(taps, 1.0, x)
    conv_size = weight.shape[-1]
    p = (kernel.shape[0] - factor) + (conv_size - 1)
    x = upfirdn2d(x, kernel, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, weight, stride=factor)


def _box_upsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Nearest-neighbour upsampling (score_sde ``naive_upsample_2d``)."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def _box_downsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    """Mean over ``factor x factor`` blocks (score_sde ``naive_downsample_2d``)."""
    return F.avg_pool2d(x, factor)


# --------------------------------------------------------------------------------------------------
# Initialisation (score_sde / DDPM ``default_init``: variance scaling, fan_avg, uniform)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def _default_init_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """Fill ``weight`` from U(-a, a), ``a = sqrt(3 * scale / fan_avg)``; ``scale == 0`` means 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    receptive = math.prod(weight.shape[2:]) if weight.ndim > 2 else 1
    fan_avg = (weight.shape[0] + weight.shape[1]) * receptive / 2
    bound = math.sqrt(3.0 * scale / fan_avg)
    return weight.uniform_(-bound, bound)


def _conv(in_ch: int, out_ch: int, kernel_size: int, init_scale: float = 1.0, **kwargs: Any) -> nn.Conv2d:
    """Conv2d with DDPM init and zero bias (score_sde ``ddpm_conv3x3`` / ``ddpm_conv1x1``)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, **kwargs)
    _default_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """Linear layer with DDPM init and zero bias."""
    dense = nn.Linear(in_features, out_features)
    _default_init_(dense.weight)
    nn.init.zeros_(dense.bias)
    return dense


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


# --------------------------------------------------------------------------------------------------
# Building blocks (attribute names fix the state-dict keys)
# --------------------------------------------------------------------------------------------------


class GaussianFourierProjection(nn.Module):
    r"""Random Fourier features of the log noise level: ``[sin(2 pi s W), cos(2 pi s W)]``.

    ``W ~ N(0, scale^2)`` is a frozen parameter (``requires_grad=False``), so it is in the state dict
    but not in score_sde's EMA list.

    Args:
        embedding_size: number of frequencies (output has twice as many features).
        scale: standard deviation of the frequencies.
    """

    def __init__(self, embedding_size: int, scale: float) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        """Map ``[B]`` scalars to ``[B, 2 * embedding_size]`` features (sin first)."""
        # Same product order as score_sde, so float32 phases (up to ~1e3 rad) agree bit for bit.
        phase = s[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class NIN(nn.Module):
    """Per-pixel dense layer over channels, ``y = x^T W + b`` (W stored ``[in, out]``, as in score_sde)."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.W = nn.Parameter(_default_init_(torch.empty(in_dim, num_units), init_scale))
        self.b = nn.Parameter(torch.zeros(num_units))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in, H, W] -> [B, out, H, W]``."""
        return (x.permute(0, 2, 3, 1) @ self.W + self.b).permute(0, 3, 1, 2)


class AttnBlockpp(nn.Module):
    """DDPM self-attention over all ``H*W`` positions with a residual connection.

    Args:
        channels: feature channels ``C``.
        skip_rescale: divide the residual sum by sqrt(2).
        init_scale: init scale of the output projection (0 -> near-zero).
    """

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0) -> None:
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        batch, channels, height, width = x.shape
        h = self.GroupNorm_0(x)
        q = self.NIN_0(h).reshape(batch, channels, height * width)
        k = self.NIN_1(h).reshape(batch, channels, height * width)
        v = self.NIN_2(h).reshape(batch, channels, height * width)
        logits = torch.bmm(q.transpose(1, 2), k) * (channels**-0.5)  # [B, query, key]
        attn = torch.softmax(logits, dim=-1)
        h = torch.bmm(v, attn.transpose(1, 2)).reshape(batch, channels, height, width)
        h = self.NIN_3(h)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block with noise-embedding bias and optional FIR up/down-sampling.

    Args:
        in_ch: input channels.
        out_ch: output channels (default ``in_ch``).
        temb_dim: width of the noise embedding; ``Dense_0`` is always built when given.
        up: upsample by 2 (resampling happens after the first norm+SiLU, on both paths).
        down: downsample by 2.
        dropout: dropout before the second conv.
        fir: FIR resampling with ``fir_kernel`` instead of nearest / box averaging.
        fir_kernel: separable FIR taps.
        skip_rescale: divide the residual sum by sqrt(2).
        init_scale: init scale of ``Conv_1`` (0 -> near-zero).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int | None = None,
        *,
        temb_dim: int | None = None,
        up: bool = False,
        down: bool = False,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.Conv_0 = _conv(in_ch, out_ch, 3, padding=1)
        if temb_dim is not None:
            self.Dense_0 = _linear(temb_dim, out_ch)
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = _conv(out_ch, out_ch, 3, init_scale=init_scale, padding=1)
        self.has_shortcut_conv = in_ch != out_ch or up or down
        if self.has_shortcut_conv:
            self.Conv_2 = _conv(in_ch, out_ch, 1)
        self.up, self.down = up, down
        self.fir, self.fir_kernel = fir, tuple(fir_kernel)
        self.skip_rescale = skip_rescale

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_2d(x, self.fir_kernel) if self.fir else _box_upsample_2d(x)
        if self.down:
            return downsample_2d(x, self.fir_kernel) if self.fir else _box_downsample_2d(x)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        """``x [B, in_ch, H, W]``, ``temb [B, temb_dim]`` or None -> ``[B, out_ch, H', W']``."""
        h = F.silu(self.GroupNorm_0(x))
        h = self._resample(h)
        x = self._resample(x)
        h = self.Conv_0(h)
        if temb is not None:
            h = h + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(F.silu(self.GroupNorm_1(h))))
        if self.has_shortcut_conv:
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class _FIRConvDown(nn.Module):
    """Strided conv after a FIR blur (score_sde ``up_or_down_sampling.Conv2d(down=True)``)."""

    def __init__(self, in_ch: int, out_ch: int, fir_kernel: Sequence[float], conv_size: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(_default_init_(torch.empty(out_ch, in_ch, conv_size, conv_size)))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.fir_kernel = tuple(fir_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return conv_downsample_2d(x, self.weight, self.fir_kernel) + self.bias.reshape(1, -1, 1, 1)


class PyramidDownsample(nn.Module):
    """Learned 2x downsampling of the input pyramid (score_sde ``layerspp.Downsample(with_conv=True)``).

    With ``fir`` the parameters live in ``Conv2d_0`` (FIR blur + stride-2 3x3 conv); without, in
    ``Conv_0`` (pad right/bottom by one, stride-2 3x3 conv).
    """

    def __init__(self, in_ch: int, out_ch: int, *, fir: bool, fir_kernel: Sequence[float]) -> None:
        super().__init__()
        self.fir = fir
        if fir:
            self.Conv2d_0 = _FIRConvDown(in_ch, out_ch, fir_kernel)
        else:
            self.Conv_0 = _conv(in_ch, out_ch, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_ch, H, W] -> [B, out_ch, H/2, W/2]``."""
        if self.fir:
            return self.Conv2d_0(x)
        return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
