"""Denoiser adapters: eps -> x0 (IDDPM learned range, original-chain timesteps), VE score -> x0, Re/Im."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import ccdf.checkpoints as L
from ccdf.denoisers.adapters import EpsDenoiser, VEScoreDenoiser, load_guided_denoiser, load_ncsnpp_denoiser
from ccdf.denoisers.base import apply_real_imag
from ccdf.denoisers.gaussian import DenseGaussianPrior, GaussianDenoiser
from ccdf.operators import Inpainting, SingleCoilMRI
from ccdf.sampling import sample_ccdf
from ccdf.schedules import VE, DiscreteVP, space_timesteps
from tests.helpers import SMALL, gen, small_net


class FakeEps(nn.Module):
    """eps = 0.5 x + 0.1 (and v = tanh(x) when learned); records the timesteps it is given."""

    def __init__(self, learned: bool = False, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=dtype))  # device/dtype of the "net"
        self.learned = learned
        self.seen: list[torch.Tensor] = []

    def forward(self, x, timesteps):
        self.seen.append(timesteps.clone())
        eps = 0.5 * x + 0.1
        return torch.cat([eps, torch.tanh(x)], dim=1) if self.learned else eps


def test_eps_x0_hat_is_exact():
    schedule = DiscreteVP.linear(1000)
    den = EpsDenoiser(FakeEps(), schedule)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen(0))
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    out = den(x, t)
    a = schedule.alpha(t).reshape(-1, 1, 1, 1)
    s = schedule.sigma(t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out.x0_hat, (x - s * (0.5 * x + 0.1)) / a, rtol=0, atol=0)
    assert out.var_frac is None
    assert den.net.seen[0].tolist() == [299, 699] and den.net.seen[0].dtype == torch.long
    # guided-diffusion's _predict_xstart_from_eps form: sqrt(1/abar) x - sqrt(1/abar - 1) eps
    abar = a**2
    ref = (1 / abar).sqrt() * x - (1 / abar - 1).sqrt() * (0.5 * x + 0.1)
    torch.testing.assert_close(out.x0_hat, ref, rtol=1e-12, atol=1e-12)


def test_eps_learned_range_fraction():
    den = EpsDenoiser(FakeEps(learned=True), DiscreteVP.linear(1000))
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen(1))
    out = den(x, torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(out.var_frac, (torch.tanh(x) + 1) / 2, rtol=0, atol=0)
    assert out.x0_hat.shape == x.shape


def test_eps_rejects_wrong_channels_and_schedules():
    class Bad(FakeEps):
        def forward(self, x, timesteps):
            return torch.zeros(x.shape[0], 5, *x.shape[2:], dtype=x.dtype)

    with pytest.raises(ValueError, match="5 channels for a 3-channel input"):
        EpsDenoiser(Bad(), DiscreteVP.linear(1000))(torch.zeros(1, 3, 2, 2), torch.tensor([0.5]))
    with pytest.raises(TypeError, match="DiscreteVP"):
        EpsDenoiser(FakeEps(), VE(0.01, 50))
    with pytest.raises(ValueError, match="outside"):
        EpsDenoiser(FakeEps(), DiscreteVP.linear(1000))(torch.zeros(1, 3, 2, 2), torch.tensor([0.0]))


def _run(schedule, net, num_steps, t0, variance="beta"):
    op = Inpainting(torch.ones(4, 4))
    x0 = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    y = op(x0)
    sample_ccdf(EpsDenoiser(net, schedule), schedule, op, y, x0, t0=t0, num_steps=num_steps, dc="none",
                variance=variance, generator=gen(0))  # fmt: skip
    return [int(s) for s in torch.cat(net.seen)]


@pytest.mark.parametrize("t0", [1.0, 0.5])
def test_respaced_chain_feeds_the_original_indices(t0):
    """ILVR's --timestep_respacing 10: the net sees SpacedDiffusion's timestep_map entries."""
    kept = space_timesteps(1000, "10")
    seen = _run(DiscreteVP.linear(1000, spacing="iddpm"), FakeEps(learned=True), 10, t0, variance="learned")
    assert seen == list(reversed(kept[: round(t0 * 10)]))


def test_uniform_grid_indices_and_rescaled_timesteps():
    seen = _run(DiscreteVP.linear(1000), FakeEps(), 10, 0.3)
    assert seen == [299, 199, 99]
    den = EpsDenoiser(FakeEps(), DiscreteVP.cosine(4000), rescale_timesteps=True)
    den(torch.zeros(1, 3, 2, 2, dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    assert den.net.seen[0].tolist() == [1999 * 1000 / 4000]


# --------------------------------------------------------------------------------------------
# VE score
# --------------------------------------------------------------------------------------------


class GaussianScore(nn.Module):
    """Exact score of N(mu, tau^2 I) convolved with N(0, sigma^2 I); records its inputs."""

    def __init__(self, mu: float = 0.3, tau: float = 0.5) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.mu, self.tau = mu, tau
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, sigma):
        self.inputs.append((x.clone(), sigma.clone()))
        return -(x - self.mu) / (self.tau**2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def test_ve_tweedie_matches_the_exact_gaussian_denoiser():
    schedule = VE(0.01, 378.0)
    den = VEScoreDenoiser(GaussianScore(), schedule)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=gen(2)) * 3
    t = torch.tensor([0.05, 0.4, 0.9], dtype=torch.float64)
    sigma = schedule.sigma(t).reshape(-1, 1, 1, 1)
    out = den(x, t)
    torch.testing.assert_close(out, x + sigma**2 * (-(x - 0.3) / (0.25 + sigma**2)), rtol=0, atol=0)
    prior = DenseGaussianPrior(
        torch.full((16,), 0.3, dtype=torch.float64), 0.25 * torch.eye(16, dtype=torch.float64), (1, 4, 4)
    )
    torch.testing.assert_close(out, GaussianDenoiser(prior, schedule)(x, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(den.net.inputs[0][1], sigma.reshape(-1))  # the net takes sigma itself


def test_ve_complex_is_real_and_imaginary_parts_separately():
    schedule = VE(0.01, 378.0)
    net = GaussianScore()
    den = VEScoreDenoiser(net, schedule)
    x = torch.complex(*torch.randn(2, 2, 1, 4, 4, dtype=torch.float64, generator=gen(3)))
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    out = den(x, t)
    assert out.is_complex()
    xs, sigmas = net.inputs[0]
    assert not xs.is_complex() and xs.shape[0] == 4  # Re and Im of 2 images in one batch
    torch.testing.assert_close(xs, torch.cat([x.real, x.imag]))
    torch.testing.assert_close(sigmas, schedule.sigma(t).repeat(2))
    torch.testing.assert_close(out, apply_real_imag(lambda v: den(v, t), x), rtol=0, atol=0)


def test_ve_batched_parts_equal_separate_calls_with_a_real_ncsnpp():
    net = small_net("ncsnpp").double().eval()
    den = VEScoreDenoiser(net, VE(0.01, 378.0))
    x = torch.complex(*torch.rand(2, 2, 1, 16, 16, dtype=torch.float64, generator=gen(4)))
    t = torch.tensor([0.3, 0.5], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(den(x, t), apply_real_imag(lambda v: den(v, t), x), rtol=1e-10, atol=1e-10)


def test_ve_needs_positive_sigma():
    with pytest.raises(ValueError, match="sigma"):
        VEScoreDenoiser(GaussianScore(), VE(0.01, 378.0))(torch.zeros(1, 1, 2, 2), torch.tensor([0.0]))


# --------------------------------------------------------------------------------------------
# Factories: checkpoint -> denoiser -> sampler
# --------------------------------------------------------------------------------------------


def test_guided_factory_drives_the_sampler(tmp_path):
    net = small_net("guided_unet")
    L.save_checkpoint(tmp_path / "ema_0.9999_000100.pt", net, layout="plain")
    schedule = DiscreteVP.linear(1000)
    den = load_guided_denoiser(
        schedule, ckpt=tmp_path / "ema_0.9999_000100.pt", preset=None, config=SMALL["guided_unet"]
    )
    assert isinstance(den, EpsDenoiser) and not den.net.training
    op = Inpainting((torch.rand(8, 8, generator=gen(5)) > 0.5).float())
    x0 = torch.rand(1, 3, 8, 8, generator=gen(6)) * 2 - 1
    y = op(x0)
    x = sample_ccdf(den, schedule, op, y, op.pinv(y), t0=0.3, num_steps=10, variance="learned", x0_clip=1.0,
                    generator=gen(7))  # fmt: skip
    assert x.shape == x0.shape and bool(torch.isfinite(x).all())
    torch.testing.assert_close(op(x), y)


def test_ncsnpp_factory_drives_the_mri_sampler(tmp_path):
    net = small_net("ncsnpp")
    L.save_checkpoint(tmp_path / "checkpoint_1.pth", net, layout="score_sde")
    schedule = VE(0.01, 378.0)
    den = load_ncsnpp_denoiser(schedule, ckpt=tmp_path / "checkpoint_1.pth", preset=None, config=SMALL["ncsnpp"])
    op = SingleCoilMRI.cartesian(16, acceleration=4, center_fraction=0.125)
    x0 = torch.polar(torch.rand(1, 1, 16, 16, generator=gen(8)), torch.rand(1, 1, 16, 16, generator=gen(9)))
    y = op(x0)
    x = sample_ccdf(den, schedule, op, y, op.pinv(y), t0=0.2, num_steps=10, step="ancestral", corrector="langevin",
                    generator=gen(10))  # fmt: skip
    assert x.is_complex() and x.shape == x0.shape and bool(torch.isfinite(x.abs()).all())


def test_factory_missing_checkpoint_names_the_official_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint_95.pth.*score-MRI"):
        load_ncsnpp_denoiser(VE(0.01, 378.0), ckpt=tmp_path / "checkpoint_95.pth")


# --------------------------------------------------------------------------------------------
# The whole learned-range chain against guided-diffusion's p_sample
# --------------------------------------------------------------------------------------------

CHAIN = Path(__file__).resolve().parent / "fixtures" / "guided_diffusion" / "learned_range_chain.safetensors"


class LinearEpsVar(torch.nn.Module):
    """The fixture's model: ``eps = x W_e + (t/1000) b_e``, ``v = clamp(x W_v + (t/1000) b_v, -5, 5)`` per item."""

    def __init__(self, w_eps, b_eps, w_var, b_var) -> None:
        super().__init__()
        for name, value in (("w_eps", w_eps), ("b_eps", b_eps), ("w_var", w_var), ("b_var", b_var)):
            self.register_buffer(name, value)
        self.seen: list[int] = []

    def forward(self, x, timesteps):
        self.seen.append(int(timesteps[0]))
        flat = x.reshape(x.shape[0], -1)
        tt = (timesteps.float() / 1000)[:, None]
        eps = flat @ self.w_eps + tt * self.b_eps
        v = (flat @ self.w_var + tt * self.b_var).clamp(-5, 5)
        return torch.cat([eps.reshape(x.shape), v.reshape(x.shape)], dim=1)


def test_learned_range_chain_equals_guided_diffusion_p_sample(monkeypatch):
    """Every state of a full respaced learned-range DDPM chain, the last step (s = 0) included, equals
    guided-diffusion's ``p_sample_loop`` in float32 with variance outputs v up to +-5.

    Fixture ``tests/fixtures/guided_diffusion/learned_range_chain.safetensors`` (provenance also in its
    metadata): openai/guided-diffusion at commit 22e0df8183507e13a7813f8d38d51b072ca1e67c, unmodified,
    torch 2.14.1 CPU float32, one-off script outside this repository.
    ``SpacedDiffusion(space_timesteps(1000, "23"), get_named_beta_schedule("linear", 1000), EPSILON,
    LEARNED_RANGE, MSE, rescale_timesteps=False)``, ``p_sample_loop_progressive(model, (2, 3, 4, 4),
    noise=x_T, clip_denoised=True)``; the model is :class:`LinearEpsVar` with the stored weights (drawn from
    ``torch.Generator().manual_seed(20240)``: W_e ~ N(0, 1/48), b_e ~ N(0, 0.25), W_v ~ N(0, 9/48),
    b_v ~ N(0, 4); v spans [-5, 5], 44% of the last step's v exceed 1.54), and ``th.randn_like`` in
    ``gaussian_diffusion`` was patched to return the stored ``noise[k]`` at step k. Stored: ``x_T``,
    ``noise`` [23, 2, 3, 4, 4], every sample ``x`` [23, ...] and ``pred_xstart`` (``x0_hat``), and the
    original-chain ``timesteps`` the model saw. "23" is one of the counts whose kept indices the earlier
    rounding got wrong. Tolerance rtol 1e-5: float32 arithmetic in a different order (the ccdf coefficients
    are float64 cast to float32, guided-diffusion's are extracted in float32), a few ulps per step.
    """
    from safetensors.torch import load_file

    import ccdf.sampling.steps as steps_module
    import ccdf.schedules.base as base_module

    ref = load_file(str(CHAIN))
    net = LinearEpsVar(ref["w_eps"], ref["b_eps"], ref["w_var"], ref["b_var"])
    schedule = DiscreteVP.linear(1000, spacing="iddpm")
    k = ref["noise"].shape[0]
    sigma_start = schedule.sigma(schedule.timesteps(k)[0]).float()
    # the sampler's draws, in order: the forward jump from x_init = 0 (scaled so that it lands on x_T), then
    # one per step, each the noise guided-diffusion drew at that step (p_sample draws on the last step too)
    draws = iter([ref["x_T"] / sigma_start, *ref["noise"]])
    monkeypatch.setattr(base_module, "randn_like", lambda x, generator: next(draws).to(x.dtype))
    monkeypatch.setattr(steps_module, "randn_like", lambda x, generator: next(draws).to(x.dtype))
    states, x0s = [], []
    op = Inpainting(torch.ones(4, 4))
    x_init = torch.zeros(2, 3, 4, 4)
    out = sample_ccdf(
        EpsDenoiser(net, schedule), schedule, op, op(x_init), x_init, t0=1.0, num_steps=k, step="ddpm",
        variance="learned", x0_clip=1.0, dc="none",
        callback=lambda info: (states.append(info.x.clone()), x0s.append(info.x0_hat.clone())),
    )  # fmt: skip
    assert next(draws, None) is None  # every recorded noise was used, none more
    assert net.seen == ref["timesteps"].tolist()  # SpacedDiffusion's timestep_map, 999 .. 0
    assert net.w_eps.dtype == out.dtype == torch.float32
    assert ref["v"].abs().max() == 5 and (ref["v"][-1] > 1.54).any()  # the range that overflowed before
    assert torch.isfinite(out).all()
    # x0_hat = (x_t - sigma eps) / alpha cancels at high noise: float32 rounding of x_t and sigma eps (a few ulps
    # of |x_t|) grows by 1 / alpha(t) (101 on the second step), hence the per-step absolute tolerance
    alpha = schedule.alpha(schedule.timesteps(k)[:-1])
    for i, (x0_hat, x0_ref) in enumerate(zip(x0s, ref["x0_hat"], strict=True)):
        x_in = ref["x_T"] if i == 0 else ref["x"][i - 1]
        atol = 4 * torch.finfo(torch.float32).eps * x_in.abs().max().item() / alpha[i].item()
        torch.testing.assert_close(x0_hat, x0_ref, rtol=1e-5, atol=atol, msg=lambda m, i=i: f"x0_hat {i}: {m}")
    for i, (x, x_ref) in enumerate(zip(states, ref["x"], strict=True)):
        torch.testing.assert_close(x, x_ref, rtol=1e-5, atol=1e-6, msg=lambda m, i=i: f"step {i}: {m}")
    torch.testing.assert_close(out, ref["x"][-1], rtol=1e-5, atol=1e-6)
