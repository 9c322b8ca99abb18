r"""fastMRI U-Net (Ronneberger et al. 2015; Zbontar et al. 2018), key-compatible with ``fastmri``.

Re-implementation of ``fastmri/models/unet.py`` (facebookresearch/fastMRI) with the same module
tree, so the published ``knee_sc_leaderboard_state_dict.pt`` (``Unet(1, 1, chans=256,
num_pool_layers=4, drop_prob=0.0)``, 496,372,225 parameters) loads with ``strict=True``. With
``P = num_pool_layers`` the state dict holds, in order:

- ``down_sample_layers.{0..P-1}.layers.{0,4}.weight``: 3x3 convs of the encoder blocks;
- ``conv.layers.{0,4}.weight``: bottleneck block;
- ``up_conv.{0..P-2}.layers.{0,4}.weight`` and ``up_transpose_conv.{0..P-1}.layers.0.weight``
  (``ConvTranspose2d`` weights, shape ``[in, out, 2, 2]``), interleaved by level;
- ``up_conv.{P-1}.0.layers.{0,4}.weight``, ``up_conv.{P-1}.1.weight`` / ``.bias``: last block and
  the final 1x1 conv, the only layer with a bias.

Every conv block is ``Conv3x3 (no bias) -> InstanceNorm2d (affine=False) -> LeakyReLU(0.2) ->
Dropout2d`` twice; the norms hold no parameters or buffers.

Value range: the net works on whatever the data transform gives it. fastMRI's ``UnetDataTransform``
feeds the magnitude of the zero-filled image, instance-normalised ``(x - mean) / (std + 1e-11)``
and clamped to ``[-6, 6]``, and the output is de-normalised with the same mean and std.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Unet", "ConvBlock", "TransposeConvBlock"]


class ConvBlock(nn.Module):
    """Two ``Conv3x3 -> InstanceNorm -> LeakyReLU(0.2) -> Dropout2d`` stages (``layers.0..7``).

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
        drop_prob: Dropout2d probability.
    """

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.drop_prob = drop_prob
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: ``[B, in_chans, H, W]``.

        Returns:
            ``[B, out_chans, H, W]``.
        """
        return self.layers(x)


class TransposeConvBlock(nn.Module):
    """``ConvTranspose2d(k=2, s=2, no bias) -> InstanceNorm -> LeakyReLU(0.2)`` (``layers.0..2``).

    Args:
        in_chans: Input channels.
        out_chans: Output channels.
    """

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Upsample by 2.

        Args:
            x: ``[B, in_chans, H, W]``.

        Returns:
            ``[B, out_chans, 2H, 2W]``.
        """
        return self.layers(x)


class Unet(nn.Module):
    """fastMRI U-Net: ``num_pool_layers`` levels of conv block + 2x2 average pooling, mirrored.

    Channels double at each level: ``chans, 2 chans, ..., 2**(P-1) chans`` in the encoder and
    ``2**P chans`` at the bottleneck. Odd sizes are handled as in fastMRI: pooling floors, and
    after each transpose conv a one-pixel reflect pad on the right / bottom restores the skip's
    size. Any ``H, W >= 2**P`` works.

    Args:
        in_chans: Input channels (1 for magnitude images).
        out_chans: Output channels.
        chans: Channels of the first level (256 in the leaderboard models, 32 by default).
        num_pool_layers: Number of down/up-sampling levels P.
        drop_prob: Dropout2d probability inside every conv block.

    Example:
        >>> import torch
        >>> Unet(1, 1, chans=4, num_pool_layers=2)(torch.rand(2, 1, 9, 10)).shape
        torch.Size([2, 1, 9, 10])
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        chans: int = 32,
        num_pool_layers: int = 4,
        drop_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.chans = chans
        self.num_pool_layers = num_pool_layers
        self.drop_prob = drop_prob

        self.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, chans, drop_prob)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(ch, ch * 2, drop_prob))
            ch *= 2
        self.conv = ConvBlock(ch, ch * 2, drop_prob)

        # Registration order (up_conv before up_transpose_conv) fixes the official state_dict order.
        self.up_conv = nn.ModuleList()
        self.up_transpose_conv = nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch))
            self.up_conv.append(ConvBlock(ch * 2, ch, drop_prob))
            ch //= 2
        self.up_transpose_conv.append(TransposeConvBlock(ch * 2, ch))
        self.up_conv.append(
            nn.Sequential(
                ConvBlock(ch * 2, ch, drop_prob),
                nn.Conv2d(ch, out_chans, kernel_size=1, stride=1),
            )
        )

    def forward(self, image: Tensor) -> Tensor:
        """Map an image to an image of the same size.

        Args:
            image: ``[B, in_chans, H, W]``; for the published weights, the instance-normalised
                magnitude image (see the module docstring).

        Returns:
            ``[B, out_chans, H, W]``.
        """
        stack: list[Tensor] = []
        output = image
        for layer in self.down_sample_layers:
            output = layer(output)
            stack.append(output)
            output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)

        output = self.conv(output)

        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv, strict=True):
            skip = stack.pop()
            output = transpose_conv(output)
            # Reflect-pad right / bottom by one pixel where pooling dropped an odd row / column.
            pad_w = int(output.shape[-1] != skip.shape[-1])
            pad_h = int(output.shape[-2] != skip.shape[-2])
            if pad_w or pad_h:
                output = F.pad(output, [0, pad_w, 0, pad_h], "reflect")
            output = conv(torch.cat([output, skip], dim=1))

        return output
