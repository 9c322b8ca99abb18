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

The FIR resampling op ``upfirdn2d`` (StyleGAN2) is plain PyTorch (:mod:`ccdf.nets.ncsnpp_layers`), no C++/CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccdf.nets.ncsnpp_layers import (
    AttnBlockpp,
    GaussianFourierProjection,
    PyramidDownsample,
    ResnetBlockBigGANpp,
    _conv,
    _group_norm,
    _linear,
    conv_downsample_2d,
    downsample_2d,
    upfirdn2d,
    upsample_2d,
)

__all__ = [
    "AttnBlockpp",
    "NCSNpp",
    "conv_downsample_2d",
    "downsample_2d",
    "upfirdn2d",
    "upsample_2d",
]


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
