r"""NCSN++ score network (Song et al., ICLR 2021, "Score-Based Generative Modeling through SDEs").

A re-implementation of ``models/ncsnpp.py`` of yang-song/score_sde_pytorch in the configuration that
HJ-harry/score-MRI trained on fastMRI knee (continuous VE SDE, 320x320 magnitude images): Gaussian Fourier
noise embedding, BigGAN-style residual blocks with FIR (``[1, 3, 3, 1]``) up/down-sampling, a residual
input pyramid, DDPM self-attention and ``h / sigma`` output scaling.

State-dict keys, shapes and the registration order of parameters equal the official ones
(``sigmas``, ``all_modules.0.W``, ``all_modules.1.weight``, ...), so an official checkpoint loads with
``strict=True`` once its ``module.`` prefix is removed, and score_sde's EMA ``shadow_params`` list maps
positionally onto ``[n for n, p in net.named_parameters() if p.requires_grad]``.

Supported options: ``resblock_type='biggan'``, ``progressive='none'``, ``progressive_input`` in
``{'none', 'residual'}``, ``embedding_type='fourier'``, SiLU nonlinearity, GroupNorm; ``fir``,
``skip_rescale``, ``conditional``, ``scale_by_sigma`` and ``centered`` may be switched either way.
Other score_sde options (DDPM blocks, output pyramids, positional embedding) are rejected.

The FIR resampling op ``upfirdn2d`` (StyleGAN2) is written here in plain PyTorch; no C++/CUDA extension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NCSNPP_PRESETS",
    "NCSNpp",
    "conv_downsample_2d",
    "downsample_2d",
    "ncsnpp_config",
    "upfirdn2d",
    "upsample_2d",
]


# --------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------

NCSNPP_PRESETS: dict[str, dict[str, Any]] = {
    # score-MRI configs/ve/fastmri_knee_320_ncsnpp_continuous.py over configs/default_lsun_configs.py
    "fastmri_knee_320": dict(
        image_size=320,
        num_channels=1,
        nf=128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=4,
        attn_resolutions=(16,),
        dropout=0.0,
        fir=True,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        resblock_type="biggan",
        progressive="none",
        progressive_input="residual",
        progressive_combine="sum",
        embedding_type="fourier",
        fourier_scale=16.0,
        init_scale=0.0,
        conditional=True,
        scale_by_sigma=True,
        centered=False,
        sigma_min=0.01,
        sigma_max=378.0,
        num_scales=2000,
    ),
}


def ncsnpp_config(name: str) -> dict[str, Any]:
    """Keyword arguments of :class:`NCSNpp` for a published checkpoint.

    Args:
        name: preset key; ``"fastmri_knee_320"`` is score-MRI's fastMRI knee model.

    Returns:
        A fresh dict, so ``NCSNpp(**ncsnpp_config(name))`` builds the official architecture.
    """
    if name not in NCSNPP_PRESETS:
        raise KeyError(f"unknown NCSN++ preset {name!r}; known: {sorted(NCSNPP_PRESETS)}")
    return dict(NCSNPP_PRESETS[name])


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


# --------------------------------------------------------------------------------------------------
# NCSN++
# --------------------------------------------------------------------------------------------------


class NCSNpp(nn.Module):
    r"""NCSN++ (score_sde ``models/ncsnpp.py``) for the continuous VE SDE.

    The forward pass returns the score :math:`\nabla_x \log p_\sigma(x)` when ``scale_by_sigma`` is set
    (network output divided by :math:`\sigma`). The noise input is the per-sample standard deviation
    :math:`\sigma`, which score_sde's continuous VE model receives as ``labels``; the embedding uses
    :math:`\log\sigma`.

    Module order inside ``all_modules`` (and so every key ``all_modules.N...``) follows score_sde:
    Fourier embedding, two dense layers (if ``conditional``), input conv, per level ``num_res_blocks``
    res blocks (each followed by attention at ``attn_resolutions``), then a downsampling res block
    and a pyramid downsampler (if ``progressive_input='residual'``) except at the last level; the
    middle res/attention/res; per level from the coarsest ``num_res_blocks + 1`` res blocks on
    concatenated skips, attention, an upsampling res block except at level 0; GroupNorm; output conv.

    Args:
        image_size: training resolution (square); decides where attention sits.
        num_channels: image channels in and out.
        nf: base width.
        ch_mult: width multiplier per resolution level.
        num_res_blocks: res blocks per level on the way down (one more on the way up).
        attn_resolutions: spatial sizes at which attention follows each res block.
        dropout: dropout inside res blocks.
        fir: FIR (``fir_kernel``) resampling; otherwise nearest/box resampling.
        fir_kernel: separable FIR taps.
        skip_rescale: residual sums are divided by sqrt(2).
        resblock_type: only ``"biggan"``.
        progressive: only ``"none"`` (no output pyramid).
        progressive_input: ``"residual"`` (learned input pyramid added at every level) or ``"none"``.
        progressive_combine: only used by other pyramid modes; must be ``"sum"`` or ``"cat"``.
        embedding_type: only ``"fourier"``.
        fourier_scale: std of the Fourier frequencies.
        init_scale: init scale of the last conv of each block (0 -> near-zero, as in score_sde).
        conditional: condition res blocks on the noise embedding.
        scale_by_sigma: divide the output by sigma.
        centered: inputs already in [-1, 1]; if False they are taken in [0, 1] and mapped by ``2x - 1``.
        sigma_min: smallest VE noise level (for the ``sigmas`` buffer only).
        sigma_max: largest VE noise level (for the ``sigmas`` buffer only).
        num_scales: length of the ``sigmas`` buffer (float64, descending), kept for key compatibility.
    """

    def __init__(
        self,
        *,
        image_size: int = 320,
        num_channels: int = 1,
        nf: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        fir: bool = True,
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        resblock_type: str = "biggan",
        progressive: str = "none",
        progressive_input: str = "residual",
        progressive_combine: str = "sum",
        embedding_type: str = "fourier",
        fourier_scale: float = 16.0,
        init_scale: float = 0.0,
        conditional: bool = True,
        scale_by_sigma: bool = True,
        centered: bool = False,
        sigma_min: float = 0.01,
        sigma_max: float = 378.0,
        num_scales: int = 2000,
    ) -> None:
        super().__init__()
        if resblock_type.lower() != "biggan":
            raise NotImplementedError(f"resblock_type {resblock_type!r}: only 'biggan' is implemented")
        if progressive.lower() != "none":
            raise NotImplementedError(f"progressive {progressive!r}: only 'none' is implemented")
        if progressive_input.lower() not in ("none", "residual"):
            raise NotImplementedError(
                f"progressive_input {progressive_input!r}: only 'none' and 'residual' are implemented"
            )
        if progressive_combine.lower() not in ("sum", "cat"):
            raise ValueError(f"progressive_combine must be 'sum' or 'cat', got {progressive_combine!r}")
        if embedding_type.lower() != "fourier":
            raise NotImplementedError(f"embedding_type {embedding_type!r}: only 'fourier' is implemented")

        self.image_size = image_size
        self.num_channels = num_channels
        self.num_res_blocks = num_res_blocks
        self.conditional = conditional
        self.scale_by_sigma = scale_by_sigma
        self.centered = centered
        self.skip_rescale = skip_rescale
        self.residual_input = progressive_input.lower() == "residual"
        num_levels = len(ch_mult)
        self.num_levels = num_levels
        resolutions = [image_size // 2**i for i in range(num_levels)]
        self.attn_at_level = [res in tuple(attn_resolutions) for res in resolutions]

        # Unused by the Fourier-embedded model, but part of the official state dict (float64).
        sigmas = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
        self.register_buffer("sigmas", torch.tensor(sigmas))

        temb_dim = 4 * nf
        block_kw: dict[str, Any] = dict(
            temb_dim=temb_dim,
            dropout=dropout,
            fir=fir,
            fir_kernel=fir_kernel,
            skip_rescale=skip_rescale,
            init_scale=init_scale,
        )

        def res_block(in_ch: int, out_ch: int | None = None, **kw: Any) -> ResnetBlockBigGANpp:
            return ResnetBlockBigGANpp(in_ch, out_ch, **block_kw, **kw)

        def attn_block(channels: int) -> AttnBlockpp:
            return AttnBlockpp(channels, skip_rescale=skip_rescale, init_scale=init_scale)

        modules: list[nn.Module] = [GaussianFourierProjection(nf, fourier_scale)]
        if conditional:
            modules += [_linear(2 * nf, temb_dim), _linear(temb_dim, temb_dim)]
        modules.append(_conv(num_channels, nf, 3, padding=1))

        # Encoder.
        skip_channels = [nf]
        in_ch = nf
        pyramid_ch = num_channels
        for level in range(num_levels):
            out_ch = nf * ch_mult[level]
            for _ in range(num_res_blocks):
                modules.append(res_block(in_ch, out_ch))
                in_ch = out_ch
                if self.attn_at_level[level]:
                    modules.append(attn_block(in_ch))
                skip_channels.append(in_ch)
            if level != num_levels - 1:
                modules.append(res_block(in_ch, down=True))
                if self.residual_input:
                    modules.append(PyramidDownsample(pyramid_ch, in_ch, fir=fir, fir_kernel=fir_kernel))
                    pyramid_ch = in_ch
                skip_channels.append(in_ch)

        # Middle.
        modules += [res_block(in_ch), attn_block(in_ch), res_block(in_ch)]

        # Decoder.
        for level in reversed(range(num_levels)):
            out_ch = nf * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                modules.append(res_block(in_ch + skip_channels.pop(), out_ch))
                in_ch = out_ch
            if self.attn_at_level[level]:
                modules.append(attn_block(in_ch))
            if level != 0:
                modules.append(res_block(in_ch, up=True))
        assert not skip_channels

        modules.append(_group_norm(in_ch))
        modules.append(_conv(in_ch, num_channels, 3, init_scale=init_scale, padding=1))
        self.all_modules = nn.ModuleList(modules)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Score (or unscaled output) of noisy images.

        Args:
            x: noisy images ``[B, num_channels, H, W]``; in [0, 1]-scale if ``centered`` is False
                (mapped to ``2x - 1`` here), else in [-1, 1]-scale. ``H = W = image_size`` for the
                attention placement of the trained model.
            sigma: per-sample noise std ``[B]`` (a 0-dim tensor is broadcast), strictly positive.

        Returns:
            ``[B, num_channels, H, W]``; the score ``h / sigma`` if ``scale_by_sigma``.
        """
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        mods = iter(self.all_modules)

        temb: Tensor | None = next(mods)(torch.log(sigma))
        if self.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(F.silu(temb))
        else:
            temb = None

        if not self.centered:
            x = 2 * x - 1.0

        pyramid = x
        hs = [next(mods)(x)]
        for level in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_at_level[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.num_levels - 1:
                h = next(mods)(hs[-1], temb)
                if self.residual_input:
                    pyramid = self._merge(next(mods)(pyramid), h)
                    h = pyramid
                hs.append(h)

        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)

        for level in reversed(range(self.num_levels)):
            for _ in range(self.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at_level[level]:
                h = next(mods)(h)
            if level != 0:
                h = next(mods)(h, temb)

        h = F.silu(next(mods)(h))
        h = next(mods)(h)
        if next(mods, None) is not None:  # pragma: no cover - construction and forward out of sync
            raise RuntimeError("NCSNpp.forward did not consume all modules")

        if self.scale_by_sigma:
            h = h / sigma.reshape(-1, *([1] * (h.ndim - 1)))
        return h
