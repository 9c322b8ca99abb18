r"""Exact propagation of CCDF for a Gaussian prior (docs/reference/THEORY.md §2), mirroring the project's sampler.

Every step of :func:`ccdf.sampling.sample_ccdf` with the exact Gaussian denoiser is affine plus
Gaussian noise. Writing the output as ``x_0 = T x_{N'} + K y + xi`` (``Cov xi = Q``) and absorbing the
sub-steps backwards from the last one gives T, K, Q for **every** N' in one pass. With
``x_{N'} = a x_init + s z`` (a = alpha(t0), s = sigma(t0)), ``x_init = x_true + e``,
``e ~ N(0, eps0 B B^T)`` independent of x_true, and ``y = P x_true + sigma_y P n``:

.. code-block:: text

    E(N', eps0) = E||x_rec - x_true||^2 = tr(G Sigma G^T) + s^2 ||T||_F^2 + tr Q + sigma_y^2 ||K P||_F^2
                                          + eps0 a^2 ||T B||_F^2             =: V(N') + eps0 h(N')
    D(N', eps0) = E||x_rec - x~_rec||^2 = 2 s^2 ||T||_F^2 + 2 tr Q + eps0 a^2 ||T B||_F^2 =: D0(N') + eps0 h(N')

with ``G = a T + K P - I``; the second run x~ starts from x_true and has independent sampler noise
but the same y. (THEORY writes ``a`` for alpha-bar = alpha(t0)^2.)

What the code does, sub-step by sub-step, at the sampler's grid ``schedule.timesteps(N, 1)``:

* forward jump ``x = alpha(t0) x_init + sigma(t0) z`` (no DC before the first step);
* per level t -> s: ``n_corrector`` Langevin steps at t, each followed by DC at t; one ``step``
  (DDPM ancestral with variance beta | beta_tilde, DDIM with eta) from t to s; DC at s;
* the denoiser is the exact posterior mean, ``D_t = a_t Sigma (a_t^2 Sigma + s_t^2 I)^{-1}``;
* DC (:class:`ccdf.sampling.conditioning.Projection`) is ``x <- A x + P(a_t A^+ y + s_t w)`` with fresh
  white w at every call. With measurement noise the code diffuses the *noisy* y, so ``sigma_y P n``
  enters the known part at every level (scaled by a_t) and is copied into the output's known part at
  t = 0; it also leaks into the unknown part through later steps when A does not commute with Sigma.
  This is modelled exactly (the ``sigma_y^2 ||K P||_F^2`` term). D uses the same y for both runs.

Coordinates: columns in the eigenbasis U of Sigma, rows of T and K restricted to the unknown
subspace (T = V_u R U^T, K = P + V_u K_r U^T); cost O(n_u^2 n) per sub-step, and O(n) when A commutes
with Sigma (the joint eigenbasis makes every map diagonal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ccdf.theory.problems import LinearGaussianProblem

STEP_KINDS = ("ddpm", "ancestral", "ddim")
VARIANCE_KINDS = ("beta", "beta_tilde", "exact")


@dataclass
class Substep:
    """One affine sub-step ``x <- A (F x + nu) + P(a_dc y + s_dc w)`` in Sigma's eigenbasis.

    Attributes:
        gain: ``[n]`` diagonal of F.
        noise: ``[n]`` diagonal of Cov nu (the sampler's noise, white in pixels unless ``exact``).
        a_dc: alpha at the DC level.
        s_dc: sigma at the DC level.
    """

    gain: np.ndarray
    noise: np.ndarray
    a_dc: float
    s_dc: float


@dataclass
class Propagation:
    r"""Exact error curves for N' = 0..N (index j = N'; t0 = grid time of j).

    Attributes:
        t0: ``[N+1]`` start time of each N' (``t0[0] = 0``: no diffusion).
        alpha: ``[N+1]`` alpha(t0); ``sigma``: ``[N+1]`` sigma(t0).
        V: ``[N+1]`` eps0-free part of E (V(0) = 0).
        h: ``[S, N+1]`` forgetting factor for each error shape (h(0) = ||B||_F^2 = 1).
        D0: ``[N+1]`` eps0-free part of D.
        bias, jump, noise, meas: ``[N+1]`` the parts of V: ``tr(G Sigma G^T)``, ``s^2 ||T||_F^2``,
            ``tr Q``, ``sigma_y^2 ||K P||_F^2``.
        stored: N' -> dict with ``R`` ``[n_u, n]`` (T = V_u R U^T), ``Kr`` ``[n_u, n]``, ``Q`` ``[n_u, n_u]``
            (unknown block of Cov xi in the V_u basis), for the N' requested by ``store``.
    """

    t0: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    V: np.ndarray
    h: np.ndarray
    D0: np.ndarray
    bias: np.ndarray
    jump: np.ndarray
    noise: np.ndarray
    meas: np.ndarray
    stored: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def error(self, eps0: float, shape: int = 0) -> np.ndarray:
        """``E(N', eps0) = V + eps0 h``, ``[N+1]``."""
        return self.V + eps0 * self.h[shape]

    def distance(self, eps0: float, shape: int = 0) -> np.ndarray:
        """``D(N', eps0) = D0 + eps0 h``, ``[N+1]``."""
        return self.D0 + eps0 * self.h[shape]


def grid_coefficients(schedule, num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampler's grid ascending, ``t_j`` for j = 0..N, with ``alpha(t_j)``, ``sigma(t_j)`` (float64).

    The grid for N' = j is the last j + 1 points of ``schedule.timesteps(N, 1)`` (uniform and
    IDDPM spacing alike), so one pass over this grid serves every N'.
    """
    t = schedule.timesteps(num_steps, 1.0).flip(0)
    return (
        t.double().numpy(),
        schedule.alpha(t).double().numpy(),
        schedule.sigma(t).double().numpy(),
    )


def reverse_substeps(
    evals: np.ndarray,
    schedule,
    num_steps: int,
    *,
    step: str = "ddpm",
    variance: str = "beta",
    eta: float = 0.0,
    corrector: str | None = None,
    n_corrector: int = 1,
    snr: float = 0.16,
    final_noise: bool = False,
) -> list[list[Substep]]:
    r"""The affine sub-steps of each reverse level, as :func:`ccdf.sampling.sample_ccdf` runs them.

    Args:
        evals: ``[n]`` eigenvalues of Sigma (the exact denoiser is diagonal in its eigenbasis).
        schedule: a :class:`ccdf.schedules.Schedule`.
        num_steps: N.
        step: ``"ddpm"``/``"ancestral"`` or ``"ddim"`` (:data:`ccdf.sampling.steps.STEPS`).
        variance: ``"beta"``, ``"beta_tilde"`` (the code's choices) or ``"exact"`` (the true Gaussian
            reverse kernel ``var_ts v_s / v_t``, ``v_t = a_t^2 lambda + s_t^2``, with noise on the last
            step too: an exact sampler of the prior).
        eta: DDIM's eta.
        corrector: None or ``"langevin"`` (step-size rule ``"sigma"``:
            ``eps = 2 (a_t/a_s)^2 (snr s_t)^2``).
        n_corrector: Langevin steps per level.
        snr: Langevin signal-to-noise ratio.
        final_noise: also add the ancestral noise on the last step (s = 0), as docs/reference/THEORY.md's recursion
            does for ``variance="beta"`` (sigma_1^2 = beta_1); the project's code adds none.

    Returns:
        ``levels[j - 1]`` (j = 1..N) = the sub-steps from level j to j - 1 in time order.
    """
    if step not in STEP_KINDS:
        raise ValueError(f"unknown step {step!r}; choose one of {STEP_KINDS}")
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCE_KINDS}")
    if corrector not in (None, "langevin"):
        raise ValueError(f"unknown corrector {corrector!r}; only 'langevin' (step size 'sigma') is modelled")
    lam = np.asarray(evals, dtype=np.float64)
    _, alpha, sigma = grid_coefficients(schedule, num_steps)
    zeros = np.zeros_like(lam)
    levels = []
    for j in range(1, num_steps + 1):
        a_t, s_t, a_s, s_s = alpha[j], sigma[j], alpha[j - 1], sigma[j - 1]
        var_ts = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0)  # steps._coefs
        var_post = var_ts * s_s**2 / s_t**2
        v_t = a_t**2 * lam + s_t**2
        den = a_t * lam / v_t  # exact denoiser gain
        subs = []
        if corrector is not None:
            eps = 2 * (a_t / a_s) ** 2 * (snr * s_t) ** 2
            gain = 1 + eps * (a_t * den - 1) / s_t**2
            subs += [Substep(gain, np.full_like(lam, 2 * eps), a_t, s_t)] * n_corrector
        if step == "ddim":
            var_eta = eta**2 * var_post
            r = np.sqrt(max(s_s**2 - var_eta, 0.0))
            gain = (a_s - r * a_t / s_t) * den + r / s_t
            noise = np.full_like(lam, var_eta) if eta > 0 else zeros
        else:
            gain = (a_s * var_ts / s_t**2) * den + (a_t / a_s) * s_s**2 / s_t**2
            if variance == "exact":
                noise = var_ts * (a_s**2 * lam + s_s**2) / v_t
            else:
                var = var_ts if variance == "beta" else var_post
                noise = np.full_like(lam, var if (s_s > 0 or final_noise) else 0.0)
        subs.append(Substep(gain, noise, a_s, s_s))
        levels.append(subs)
    return levels


def _as_factors(problem: LinearGaussianProblem, error_shapes) -> list[np.ndarray]:
    """Error-shape factors in eigen-coordinates, ``U^T B`` ``[n, r]`` each."""
    out = []
    for b in error_shapes:
        b = np.asarray(b, dtype=np.float64)
        out.append(problem.evecs.T @ (b[:, None] if b.ndim == 1 else b))
    return out


def propagate(
    problem: LinearGaussianProblem,
    schedule,
    num_steps: int,
    *,
    error_shapes: Sequence[np.ndarray] = (),
    store: Sequence[int] | str = (),
    dense: bool = False,
    **sampler: Any,
) -> Propagation:
    r"""Exact V(N'), h(N'), D0(N') for N' = 0..N in one backward pass (docs/reference/THEORY.md §2).

    Args:
        problem: prior, projection and ``sigma_y`` (:func:`ccdf.theory.problems.make_problem`).
        schedule: the project's schedule (``DiscreteVP`` or ``VE``); its grid
            ``timesteps(num_steps, 1)`` is the sampler's.
        num_steps: N.
        sampler: the sampler's settings, the keywords of :func:`reverse_substeps` (``step``, ``variance``,
            ``eta``, ``corrector``, ``n_corrector``, ``snr``, ``final_noise``: as
            :func:`ccdf.sampling.sample_ccdf`; ``variance="exact"`` is the true Gaussian kernel;
            ``final_noise`` adds ancestral noise on the last step too, docs/reference/THEORY.md's reading, not
            the code's).
        error_shapes: factors B ``[n, r]`` (or ``[n]``) of the initial-error covariances, pixel basis
            (:func:`ccdf.theory.problems.error_shape`); h is reported for each.
        store: N' values (or ``"all"``) at which to keep R, K_r and the full Q block (for Fréchet
            distances; costs an extra O(n_u^2 n) per sub-step).
        dense: use the general (non-commuting) path even when A commutes with Sigma.

    Returns:
        A :class:`Propagation`.
    """
    t_grid, alpha, sigma = grid_coefficients(schedule, num_steps)
    levels = reverse_substeps(problem.evals, schedule, num_steps, **sampler)
    lam = problem.evals
    factors = _as_factors(problem, error_shapes)
    store_set = set(range(num_steps + 1)) if store == "all" else {int(j) for j in store}
    n, n_u = problem.n, problem.n_u
    n_m = n - n_u
    out = {k: np.zeros(num_steps + 1) for k in ("bias", "jump", "noise", "meas")}
    h = np.zeros((len(factors), num_steps + 1))
    h[:, 0] = [float(np.sum(f**2)) for f in factors]
    stored: dict[int, dict[str, np.ndarray]] = {}
    sy2 = problem.sigma_y**2
    if 0 in store_set:
        stored[0] = dict(identity=np.ones(1))
    fast = problem.commuting and not dense
    # state: T = I before the first absorbed sub-step
    tr_q = 0.0
    if fast:
        u = problem.unknown
        lam_u = lam[u]
        r = None  # T restricted to unknown eigen-directions: diag(r)
        q_u = np.zeros(n_u)  # diagonal of the unknown block of Q
        fac_u = [np.sum(f[u] ** 2, axis=1) for f in factors]
        for j, subs in enumerate(levels, start=1):
            for sub in reversed(subs):
                if r is None:
                    q_u += sub.noise[u]
                    tr_q += sub.s_dc**2 * n_m  # known-part noise at t = 0 (zero for VP and VE)
                    r = sub.gain[u].copy()
                else:
                    q_u += r**2 * sub.noise[u]
                    r = r * sub.gain[u]
            a, s = alpha[j], sigma[j]
            out["bias"][j] = float(np.sum(lam_u * (a * r - 1) ** 2))
            out["jump"][j] = s**2 * float(np.sum(r**2))
            out["noise"][j] = tr_q + float(np.sum(q_u))
            out["meas"][j] = sy2 * n_m
            for b, fu in enumerate(fac_u):
                h[b, j] = a**2 * float(np.sum(r**2 * fu))
            if j in store_set:
                full_r = np.zeros((n_u, n))
                full_r[np.arange(n_u), u] = r
                stored[j] = dict(R=full_r, Kr=np.zeros((n_u, n)), Q=np.diag(q_u))
    else:
        w = problem.w  # [n, n_u] = U^T V_u
        r = None  # T = V_u R U^T, R [n_u, n]
        kr = np.zeros((n_u, n))
        q_mat = np.zeros((n_u, n_u)) if store_set else None
        for j, subs in enumerate(levels, start=1):
            for sub in reversed(subs):
                if r is None:
                    # T = I: Q += A Lambda A + s^2 P; K's known block is P (counted in meas); T <- A F
                    tr_q += float(np.sum(sub.noise * np.sum(w**2, axis=1))) + sub.s_dc**2 * n_m
                    if q_mat is not None:
                        q_mat += (w.T * sub.noise) @ w
                    r = w.T * sub.gain
                else:
                    z = (r @ w) @ w.T  # R A (eigen coords)
                    rp = r - z  # R P
                    tr_q += float(np.sum(z**2 * sub.noise)) + sub.s_dc**2 * float(np.sum(rp**2))
                    if q_mat is not None:
                        q_mat += (z * sub.noise) @ z.T + sub.s_dc**2 * (rp @ rp.T)
                    kr += sub.a_dc * rp
                    r = z * sub.gain
            a, s = alpha[j], sigma[j]
            g = a * r + kr - w.T
            out["bias"][j] = float(np.sum(g**2 * lam))
            out["jump"][j] = s**2 * float(np.sum(r**2))
            out["noise"][j] = tr_q
            out["meas"][j] = sy2 * (n_m + float(np.sum(kr**2)))
            for b, f in enumerate(factors):
                h[b, j] = a**2 * float(np.sum((r @ f) ** 2))
            if j in store_set:
                stored[j] = dict(R=r.copy(), Kr=kr.copy(), Q=q_mat.copy())
    v = out["bias"] + out["jump"] + out["noise"] + out["meas"]
    d0 = 2 * out["jump"] + 2 * out["noise"]
    return Propagation(t0=t_grid, alpha=alpha, sigma=sigma, V=v, h=h, D0=d0, stored=stored, **out)
