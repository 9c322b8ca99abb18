r"""Denoiser adapters: turn eps- and score-networks into D(x_t, t) -> x0_hat for the samplers.

* :class:`EpsDenoiser`: guided-diffusion / IDDPM eps-prediction U-Nets on a :class:`DiscreteVP`
  chain, :math:`\hat x_0 = (x_t - \sigma_t \hat\epsilon) / \alpha_t`, with IDDPM's learned range
  (``var_frac``) when the net predicts ``2C`` channels.
* :class:`VEScoreDenoiser`: score_sde's continuous-VE NCSN++ (score-MRI), Tweedie's formula
  :math:`\hat x_0 = (x_t + \sigma_t^2 s(x_t, \sigma_t)) / \alpha_t` (alpha = 1 for VE), applied to the
  real and imaginary parts of complex (MRI) images separately, as score-MRI does.

The map from continuous time to the network's time input lives here, never in the samplers
(k-diffusion's ``OpenAIDenoiser`` pattern). :func:`load_guided_denoiser` and
:func:`load_ncsnpp_denoiser` build both from a preset and a checkpoint, for Hydra configs
(``conf/model/iddpm_ffhq256.yaml``, ``conf/model/ncsnpp_fastmri320.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.checkpoints import load_net
from ccdf.denoisers.base import DenoiserOutput
from ccdf.schedules.base import Schedule, as_time, memoized
from ccdf.utils.tensor import bcast, bcast_key

__all__ = ["EpsDenoiser", "VEScoreDenoiser", "load_guided_denoiser", "load_ncsnpp_denoiser"]


def _net_device_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(iter(net.parameters()), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


class EpsDenoiser(nn.Module):
    r"""An eps-prediction net on a discrete VP chain (DDPM / IDDPM / guided-diffusion).

    ``x0_hat = (x_t - sigma(t) eps) / alpha(t)`` (guided-diffusion's
    ``_predict_xstart_from_eps``). The net receives the *original* chain's 0-based timestep
    ``schedule.to_index(t)`` (t on the grid ``i / N``, index ``i - 1``), so with
    ``DiscreteVP(spacing="iddpm")`` it sees exactly the indices ILVR's ``SpacedDiffusion`` passes
    (``timestep_map``); off-grid times are rounded to the nearest index. With
    ``rescale_timesteps`` (IDDPM models trained with it) the net gets ``index * 1000 / N``.

    If the net returns ``2C`` channels (``learn_sigma``), the second half ``v`` gives IDDPM's
    learned-range interpolation ``var_frac = (v + 1) / 2`` (Nichol & Dhariwal 2021, eq. 15), used by
    the ancestral step with ``variance="learned"``. Clipping of x0_hat is the sampler's
    ``x0_clip`` (guided-diffusion's ``clip_denoised``).

    Args:
        net: ``net(x [B, C, H, W], timesteps [B]) -> [B, C or 2C, H, W]``.
        schedule: a schedule with ``to_index`` (:class:`ccdf.schedules.DiscreteVP`).
        rescale_timesteps: feed ``index * 1000 / N`` (float) instead of the index.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, *, rescale_timesteps: bool = False) -> None:
        super().__init__()
        if not hasattr(schedule, "to_index"):
            raise TypeError(
                f"EpsDenoiser needs a discrete VP schedule with to_index (DiscreteVP), got {type(schedule).__name__}"
            )
        self.net = net
        self.schedule = schedule
        self.rescale_timesteps = rescale_timesteps

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}, rescale_timesteps={self.rescale_timesteps}"

    def timesteps(self, t: Tensor) -> Tensor:
        """The network's time input for times ``t`` ``[B]``: original-chain indices (long) or rescaled floats
        (once per grid time: the schedule's memo)."""
        return memoized(self.schedule, ("net_timesteps", self.rescale_timesteps), (t,), self._timesteps)

    def _timesteps(self, t: Tensor) -> Tensor:
        index = self.schedule.to_index(as_time(t))  # type: ignore[attr-defined]
        n = int(self.schedule.num_train_steps)  # type: ignore[attr-defined]
        if bool(((index < 0) | (index >= n)).any()):  # host times: one check, no device sync
            raise ValueError(f"times {as_time(t).tolist()} map to chain indices outside [0, {n - 1}]")
        return index.float() * (1000.0 / n) if self.rescale_timesteps else index

    def forward(self, x_t: Tensor, t: Tensor) -> DenoiserOutput:
        """x0_hat (and ``var_frac`` for learned-sigma nets) for ``x_t`` ``[B, C, H, W]`` at times ``t`` ``[B]``."""
        t = as_time(t).reshape(-1).expand(x_t.shape[0])
        device, dtype = _net_device_dtype(self.net)
        net_t = self.timesteps(t).to(device, non_blocking=True)  # host times: copied without a sync
        out = self.net(x_t.to(device=device, dtype=dtype), net_t).to(x_t.device)
        c = x_t.shape[1]
        if out.shape[1] == 2 * c:
            eps, v = out[:, :c], out[:, c:]
            var_frac = ((v + 1) / 2).to(x_t.dtype)
        elif out.shape[1] == c:
            eps, var_frac = out, None
        else:
            raise ValueError(f"net returned {out.shape[1]} channels for a {c}-channel input (expected {c} or {2 * c})")
        sched = self.schedule
        a, s = memoized(sched, ("eps_to_x0", *bcast_key(x_t)), (t,),
                        lambda t: (bcast(sched.alpha(t), x_t), bcast(sched.sigma(t), x_t)))  # fmt: skip
        x0_hat = (x_t - s * eps.to(x_t.dtype)) / a
        return DenoiserOutput(x0_hat, var_frac)


class VEScoreDenoiser(nn.Module):
    r"""A noise-conditional score net ``s(x, sigma)`` as a denoiser, via Tweedie's formula.

    ``x0_hat = (x_t + sigma(t)^2 s(x_t, sigma(t))) / alpha(t)``; for the VE SDE alpha = 1. The net
    takes the noise level sigma itself (score_sde's continuous VE ``labels``).

    Data convention of score-MRI: MRI images are complex ``[B, 1, H, W]`` with magnitude at most
    1; the model was trained on magnitude images in ``[0, 1]`` (``centered=False``: the net maps
    its input by ``2x - 1`` itself), and is applied to the real and the imaginary part of a
    complex ``x_t`` as two independent real images with the same sigma (score-MRI's
    ``get_pc_fouriercs_RI``). Both parts go through the net in one batch of ``2B``, which equals
    :func:`ccdf.denoisers.base.apply_real_imag` (every layer acts per item). Real inputs are
    passed as they are.

    Args:
        net: ``net(x [B, C, H, W], sigma [B]) -> score [B, C, H, W]``.
        schedule: the forward process (``sigma(t) > 0`` wherever the denoiser is called).
    """

    def __init__(self, net: nn.Module, schedule: Schedule) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule

    def extra_repr(self) -> str:
        return f"schedule={self.schedule!r}"

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The net's score for real ``x`` ``[B, C, H, W]`` at noise levels ``sigma`` ``[B]``."""
        device, dtype = _net_device_dtype(self.net)
        s = self.net(x.to(device=device, dtype=dtype), sigma.to(device=device, dtype=dtype))
        return s.to(device=x.device, dtype=x.dtype)

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """x0_hat for ``x_t`` ``[B, C, H, W]`` (real or complex) at times ``t`` ``[B]``."""
        t = as_time(t).reshape(-1).expand(x_t.shape[0])
        sigma = self.schedule.sigma(t)
        if not bool((sigma > 0).all()):
            raise ValueError(f"VEScoreDenoiser needs sigma(t) > 0, got {sigma.tolist()} at t={t.tolist()}")
        a = self.schedule.alpha(t)
        if torch.is_complex(x_t):
            b = x_t.shape[0]
            parts = torch.cat([x_t.real, x_t.imag])  # [2B, C, H, W]: Re and Im as independent images
            sigma2 = sigma.repeat(2)
            x0 = (parts + bcast(sigma2**2, parts) * self.score(parts, sigma2)) / bcast(a.repeat(2), parts)
            return torch.complex(x0[:b], x0[b:])
        return (x_t + bcast(sigma**2, x_t) * self.score(x_t, sigma)) / bcast(a, x_t)


def load_guided_denoiser(
    schedule: Schedule,
    *,
    ckpt: str | Path,
    preset: str | None = "ffhq256",
    config: Mapping[str, Any] | None = None,
    use_ema: bool = True,
    rescale_timesteps: bool = False,
    device: str = "cpu",
    family: str = "guided_unet",
) -> EpsDenoiser:
    """A guided-diffusion / IDDPM U-Net checkpoint as an :class:`EpsDenoiser` (Hydra factory).

    Args:
        schedule: the chain the model was trained on (``DiscreteVP.linear(1000)`` for all guided
            checkpoints); Hydra passes it (``instantiate(cfg.model.denoiser, schedule=...)``).
        ckpt: checkpoint file (any layout of :mod:`ccdf.checkpoints`).
        preset: ``"ffhq256"`` (ILVR/DPS ``ffhq_10m.pt``), ``"afhq_dog256"``, ``"adm256_uncond"``,
            or None to take the config from a ccdf file or from the file's fingerprint.
        config: explicit :class:`ccdf.nets.guided_unet.GuidedUNet` arguments (overrides ``preset``).
        use_ema: prefer EMA weights where the file has both.
        rescale_timesteps: see :class:`EpsDenoiser` (False for every guided checkpoint).
        device: where the net runs (inputs are moved there and results back).
        family: the :mod:`ccdf.checkpoints` family; any registered family whose net maps
            ``(x, chain index)`` to eps (and ``v``) fits, so a new family's YAML can target this factory.
    """
    net, _ = load_net(ckpt, family=family, preset=preset, config=config, use_ema=use_ema, device=device)
    return EpsDenoiser(net, schedule, rescale_timesteps=rescale_timesteps)


def load_ncsnpp_denoiser(
    schedule: Schedule,
    *,
    ckpt: str | Path,
    preset: str | None = "fastmri_knee_320",
    config: Mapping[str, Any] | None = None,
    use_ema: bool = True,
    device: str = "cpu",
    family: str = "ncsnpp",
) -> VEScoreDenoiser:
    """A score_sde / score-MRI NCSN++ checkpoint as a :class:`VEScoreDenoiser` (Hydra factory).

    Args:
        schedule: the VE schedule (score-MRI: ``VE(0.01, 378)``); passed by Hydra.
        ckpt: checkpoint file (score-MRI's ``checkpoint_95.pth`` or any supported layout).
        preset: ``"fastmri_knee_320"``, or None to take the config from a ccdf file or the fingerprint.
        config: explicit :class:`ccdf.nets.ncsnpp.NCSNpp` arguments (overrides ``preset``).
        use_ema: take the EMA ``shadow_params`` (what score-MRI samples with); False: raw ``'model'``.
        device: where the net runs.
        family: the :mod:`ccdf.checkpoints` family; any registered family whose net maps ``(x, sigma)`` to the
            score fits, so a new family's YAML can target this factory.
    """
    net, _ = load_net(ckpt, family=family, preset=preset, config=config, use_ema=use_ema, device=device)
    return VEScoreDenoiser(net, schedule)


def demo_prior_path() -> Path:
    """The learned demo prior shipped in the package (see conf/model/demo_prior.yaml)."""
    from importlib import resources

    return Path(str(resources.files("ccdf") / "assets" / "models" / "demo_prior.safetensors"))


def load_demo_prior(
    schedule: Schedule, *, ckpt: str | Path | None = None, preset: str | None = "demo_prior", device: str = "cpu"
) -> EpsDenoiser:
    """The shipped demo prior (or a retrained one at ``ckpt``) as an :class:`EpsDenoiser`.

    ``preset`` names the architecture (the ``demo_prior`` preset of :mod:`ccdf.checkpoints`; the file's own
    stored config must equal it); None takes the config from the file.
    """
    path = ckpt if ckpt is not None else demo_prior_path()
    return load_guided_denoiser(schedule, ckpt=path, preset=preset, device=device)
