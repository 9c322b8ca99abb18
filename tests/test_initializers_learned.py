"""Learned initializers: ESRGAN (RRDBNet) for SR, fastMRI U-Net for MRI, from checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ccdf.checkpoints as L
from ccdf.initializers.learned import ESRGANInitializer, UNetInitializer, normalize_instance
from ccdf.operators import SingleCoilMRI, SuperResolution
from tests.helpers import SMALL, gen, small_net


def test_esrgan_value_ranges_and_output(tmp_path):
    net = small_net("rrdbnet").eval()
    L.save_checkpoint(tmp_path / "RRDB_ESRGAN_x4.pth", net, layout="esrgan")
    init = ESRGANInitializer(tmp_path / "RRDB_ESRGAN_x4.pth", scale=4, config=SMALL["rrdbnet"])
    op = SuperResolution(4)
    x0 = torch.rand(2, 3, 16, 16, generator=gen(0)) * 2 - 1
    y = op(x0)
    x_init = init(y, op)
    assert x_init.shape == x0.shape and x_init.dtype == y.dtype
    with torch.no_grad():
        expected = net(((y + 1) / 2).clamp(0, 1)).clamp(0, 1) * 2 - 1
    torch.testing.assert_close(x_init, expected)
    assert float(x_init.min()) >= -1 and float(x_init.max()) <= 1
    with pytest.raises(ValueError, match="factor is 8"):
        init(SuperResolution(8)(x0), SuperResolution(8))


def test_esrgan_x8_has_three_stages(tmp_path):
    cfg = dict(SMALL["rrdbnet"], scale=8)
    net = L.build_net("rrdbnet", cfg)
    L.save_checkpoint(tmp_path / "x8.pth", net, layout="oldarch")
    init = ESRGANInitializer(tmp_path / "x8.pth", scale=8, config=cfg)
    op = SuperResolution(8)
    assert init(op(torch.zeros(1, 3, 32, 32)), op).shape == (1, 3, 32, 32)
    with pytest.raises(L.CheckpointMismatchError, match="conv_up3"):
        ESRGANInitializer(tmp_path / "x8.pth", scale=4, config=SMALL["rrdbnet"])


def test_esrgan_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="RRDB_ESRGAN_x4.pth.*17VYV_SoZZesU6mbxz2dMAIccSSlqLecY"):
        ESRGANInitializer(tmp_path / "missing.pth")
    with pytest.raises(TypeError):
        ESRGANInitializer()  # type: ignore[call-arg]


def test_normalize_instance_is_fastmris():
    x = torch.rand(2, 1, 5, 6, dtype=torch.float64, generator=gen(1))
    normed, mean, std = normalize_instance(x)
    for b in range(2):
        ref = (x[b] - x[b].mean()) / (x[b].std() + 1e-11)
        torch.testing.assert_close(normed[b], ref)
    torch.testing.assert_close(normed * (std + 1e-11) + mean, x)


class Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x


def _knee(seed: int) -> torch.Tensor:
    mag = torch.rand(2, 1, 16, 16, generator=gen(seed))
    return torch.polar(mag / mag.max(), 2 * torch.pi * torch.rand(2, 1, 16, 16, generator=gen(seed + 1)))


def test_unet_magnitude_with_zero_filled_phase(tmp_path):
    net = small_net("fastmri_unet")
    L.save_checkpoint(tmp_path / "knee_sc_leaderboard_state_dict.pt", net, layout="plain")
    init = UNetInitializer(tmp_path / "knee_sc_leaderboard_state_dict.pt", chans=4, num_pool_layers=2)
    op = SingleCoilMRI.cartesian(16, acceleration=4, center_fraction=0.125)
    y = op(_knee(2))
    x_init = init(y, op)
    zf = op.pinv(y)
    assert x_init.is_complex() and x_init.shape == zf.shape
    keep = x_init.abs() > 1e-6
    torch.testing.assert_close(torch.angle(x_init)[keep], torch.angle(zf)[keep], atol=1e-5, rtol=0)
    # the magnitude is the de-normalised net output, clamped at 0
    normed, mean, std = normalize_instance(zf.abs().double())
    with torch.no_grad():
        out = net.eval()(normed.clamp(-6, 6).float()).double() * std + mean
    torch.testing.assert_close(x_init.abs().double(), out.clamp(min=0), atol=1e-5, rtol=1e-5)


def test_unet_with_identity_net_returns_the_zero_filled_image(tmp_path):
    L.save_checkpoint(tmp_path / "u.pt", small_net("fastmri_unet"), layout="plain")
    init = UNetInitializer(tmp_path / "u.pt", chans=4, num_pool_layers=2)
    init.net = Identity()
    op = SingleCoilMRI.cartesian(16, acceleration=4, center_fraction=0.125)
    y = op(_knee(4))
    zf = op.pinv(y)
    normed, _, _ = normalize_instance(zf.abs())
    inside = normed.abs() < 6  # clamping at +-6 std is the only change
    torch.testing.assert_close(init(y, op)[inside], zf[inside], atol=1e-5, rtol=1e-5)


def test_unet_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="knee_sc_leaderboard_state_dict.pt"):
        UNetInitializer(tmp_path / "missing.pt")
