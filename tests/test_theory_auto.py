"""``sampler.t0=auto`` (ccdf.theory.auto): on THEORY.md's Gaussian test problems the automatic t0 lands
within 5% of the optimal error (exact spectra, and Monte Carlo estimates made with the project's sampler),
and the app chooses, logs and records it.

The optimal error is the exact one of the project's DDPM / DDIM sampler (:func:`ccdf.theory.propagate`,
N = 1000); the automatic choice uses the ideal closed form with the estimated directions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ccdf.denoisers import DenseGaussianPrior, GaussianDenoiser
from ccdf.operators import Inpainting, SingleCoilMRI, SuperResolution, measure
from ccdf.schedules import DiscreteVP
from ccdf.theory import box_inpainting, eigen_subsampling, error_shape, propagate, sigma2_of_t0
from ccdf.theory.auto import (
    auto_t0,
    calibrate,
    choose_t0,
    initial_error_sum,
    posterior_variance_sum,
    unknown_diagonal,
)
from tests.helpers import FAST, compose_cfg, reconstruct, run_app

N = 1000
SHAPES = ("iso", "top", "bottom")
EPS0 = (0.03, 0.1, 0.3, 1.0, 3.0)  # per unknown pixel
SAMPLERS = {"ddpm": {}, "ddim": {"step": "ddim"}}
TOL = 1.05


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Small dense algebra: one BLAS thread (several spin-wait on a busy machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: then the BLAS library keeps its thread count
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def sched():
    return DiscreteVP.linear(N)


@pytest.fixture(scope="module")
def problems(sched):
    """Both test problems with the exact error curves of the project's samplers, for the three error shapes."""
    out = {}
    for name, make in (("box", box_inpainting), ("eigen", eigen_subsampling)):
        pb = make()
        factors = [error_shape(pb, k) for k in SHAPES]
        props = {s: propagate(pb, sched, N, error_shapes=factors, **kw) for s, kw in SAMPLERS.items()}
        out[name] = (pb, factors, props)
    return out


def _ratio(prop, eps0: float, shape: int, reverse_steps: int) -> float:
    e = prop.error(eps0, shape)
    return float(e[reverse_steps] / e.min())


def _basis_matrix(name: str, size: int = 16) -> np.ndarray:
    """Rows: the directions of ``basis`` for one 16 x 16 image (Fourier: real cos/sin pairs of the 2-D DFT)."""
    if name == "pixel":
        return np.eye(size * size)
    f = np.fft.fft2(np.eye(size * size).reshape(-1, size, size), norm="ortho").reshape(size * size, -1)
    return f.T  # [k, p]: complex DFT rows


@pytest.mark.parametrize("name", ["box", "eigen"])
def test_exact_spectra_choice_is_within_5_percent(problems, sched, name):
    """Directions = the posterior's eigen-directions (exact s_k and e_k^2): every shape, eps0 and sampler."""
    pb, factors, props = problems[name]
    worst = 0.0
    for k, b in enumerate(factors):
        w = np.sum((pb.post_evecs.T @ b) ** 2, axis=1)  # e_k^2 / eps0
        for r in EPS0:
            eps0 = r * pb.n_u
            for sampler, prop in props.items():
                c = choose_t0(sched, N, err2=eps0 * w, post_var=pb.post_var, sampler=sampler)
                ratio = _ratio(prop, eps0, k, c.num_reverse_steps)
                assert ratio <= TOL, (name, SHAPES[k], r, sampler, c.num_reverse_steps, ratio)
                worst = max(worst, ratio)
    assert worst < 1.02


def test_fourier_directions_fix_the_box_problem_pixels_do_not(problems, sched):
    """The app's default basis on the exact (infinite-calibration) diagonals: Fourier within 5% on box
    inpainting, pixels off by more than 2x for errors in the posterior's low-variance directions."""
    pb, factors, props = problems["box"]
    unknown = np.eye(pb.n) - pb.proj
    worst = {}
    for basis in ("fourier", "pixel"):
        t = _basis_matrix(basis)
        d = np.real(np.einsum("kp,pq,kq->k", t.conj(), unknown, t))
        s = np.real(np.einsum("kp,pq,kq->k", t.conj(), pb.post_cov, t))
        worst[basis] = 0.0
        for k, b in enumerate(factors):
            e = np.sum(np.abs(t @ b) ** 2, axis=1)
            for r in EPS0:
                eps0 = r * pb.n_u
                for sampler, prop in props.items():
                    c = choose_t0(sched, N, err2=eps0 * e, post_var=s, unknown_diag=d, sampler=sampler)
                    worst[basis] = max(worst[basis], _ratio(prop, eps0, k, c.num_reverse_steps))
    assert worst["fourier"] <= TOL and worst["pixel"] > 2, worst


@pytest.mark.parametrize("name,basis", [("box", "fourier"), ("eigen", "pixel")])
def test_monte_carlo_estimates_choice_is_within_5_percent(problems, sched, name, basis):
    """The app's estimators on the project's sampler: posterior variance from pairs of t0 = 1 samples
    (DDPM, a 100-step grid, exact dense Gaussian denoiser, Inpainting operator), initial error from
    draws of e ~ N(0, eps0 B B^T); then the choice is checked against the exact error curves."""
    torch.set_num_threads(1)
    pb, factors, props = problems[name]
    m = 160
    mask = torch.from_numpy(np.diag(pb.proj).copy()).reshape(1, 16, 16)
    op = Inpainting(mask)
    prior = DenseGaussianPrior(torch.zeros(pb.n, dtype=torch.float64), torch.from_numpy(pb.cov), (1, 16, 16))
    denoiser = GaussianDenoiser(prior, sched)
    g = torch.Generator().manual_seed(0)
    x0 = prior.sample(m, g)
    y = measure(op, x0)
    gens = [[torch.Generator().manual_seed(10 * i + s) for i in range(m)] for s in (1, 2)]
    post = (
        posterior_variance_sum(
            denoiser, sched, op, y, op.pinv(y), num_steps=100, generators_a=gens[0], generators_b=gens[1], basis=basis
        )
        / m
    )
    d = unknown_diagonal(op, x0[:1], basis=basis).numpy()
    for k, b in enumerate(factors):
        z = torch.randn(m, b.shape[1], generator=g, dtype=torch.float64) @ torch.from_numpy(b).T
        for r in EPS0:
            eps0 = r * pb.n_u
            err = initial_error_sum(op, x0, x0 + (eps0**0.5 * z).reshape(x0.shape), basis) / m
            for sampler, prop in props.items():
                c = choose_t0(sched, N, err2=err.numpy(), post_var=post.numpy(), unknown_diag=d, sampler=sampler)
                ratio = _ratio(prop, eps0, k, c.num_reverse_steps)
                assert ratio <= TOL, (name, SHAPES[k], r, sampler, c.num_reverse_steps, ratio)


def test_given_scalars_follow_the_rule(sched):
    """One direction: sigma*^2 = e^2 - s per unknown element (THEORY §3), scalars are means over all elements."""
    d = np.array([1.0, 1.0, 0.0, 0.0])  # half of the elements are measured
    c = choose_t0(sched, N, err2=0.25, post_var=0.05, unknown_diag=d)  # per unknown element: 0.5 and 0.1
    assert c.helps and abs(c.sigma2 - 0.4) / 0.4 < 0.02
    assert abs(float(sigma2_of_t0(sched, c.t0)) - c.sigma2) < 1e-9
    assert c.init_mse == pytest.approx(0.25) and c.post_var == pytest.approx(0.05) and c.unknown_fraction == 0.5
    none = choose_t0(sched, N, err2=0.05, post_var=0.25, unknown_diag=d)
    assert not none.helps and none.t0 == 1 / N and none.predicted_mse == pytest.approx(0.05)
    ddim = choose_t0(sched, N, err2=0.25, post_var=0.05, unknown_diag=d, sampler="ddim")
    assert abs(ddim.sigma2 - (0.5**2 - 0.1**2) / 0.1) / 2.4 < 0.02  # (e^4 - s^2)/s
    with pytest.raises(ValueError, match="nothing is unknown"):
        choose_t0(sched, N, err2=0.1, post_var=0.1, unknown_diag=np.zeros(3))
    with pytest.raises(ValueError, match=">= 0"):
        choose_t0(sched, N, err2=np.array([-1.0, 1.0]), post_var=np.ones(2))


def test_choice_for_the_mean_of_k_runs(tmp_path, sched):
    """sampler.t0=auto with sampler.average=K chooses t0 for the K-average (its run-to-run spread falls by K):
    choose_t0(runs=K) predicts the closed form of the K-average and a t0 at least as large as for one run, and
    the app passes sampler.average through (metrics.json's auto_t0.runs; given estimates, no calibration)."""
    from ccdf.theory.closed_form import ideal_terms

    d = np.array([1.0, 1.0, 0.0, 0.0])
    one = choose_t0(sched, N, err2=0.25, post_var=0.05, unknown_diag=d)
    four = choose_t0(sched, N, err2=0.25, post_var=0.05, unknown_diag=d, runs=4)
    assert one.runs == 1 and four.runs == 4 and four.t0 > one.t0 and four.predicted_mse < one.predicted_mse
    expect = float(np.sum(ideal_terms(np.full(2, 0.1), np.full(2, 0.5), four.sigma2, "ddpm", 4))) / 4
    assert four.predicted_mse == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="sampler.average"):
        choose_t0(sched, N, err2=0.25, post_var=0.05, runs=0)
    given = ["sampler.t0=auto", "auto_t0.init_mse=0.04", "auto_t0.post_var=0.01"]
    m1 = reconstruct(tmp_path, "k1", *given, base=("task=inpaint", *FAST[:2], *FAST[3:]))
    m3 = reconstruct(tmp_path, "k3", *given, "sampler.average=3", base=("task=inpaint", *FAST[:2], *FAST[3:]))
    assert m1["auto_t0"]["runs"] == 1 and m3["auto_t0"]["runs"] == 3
    assert m3["t0"] == m3["auto_t0"]["t0"] >= m1["t0"]


def test_unknown_share_of_each_direction():
    x = torch.zeros(1, 3, 16, 16)
    op = Inpainting.random(16, 0.7, seed=1)
    missing = 1 - op.mask[0, 0].double()
    torch.testing.assert_close(unknown_diagonal(op, x, basis="pixel", probes=2)[0], missing)  # exact for masks
    assert abs(float(unknown_diagonal(op, x, basis="fourier", probes=64).mean()) - 0.7) < 0.01
    mri = SingleCoilMRI.cartesian(16, acceleration=4, center_fraction=0.08, seed=0)
    d = unknown_diagonal(mri, torch.zeros(1, 1, 16, 16, dtype=torch.complex64), basis="fourier", probes=4)
    assert d.shape == (1, 16, 16, 2)
    assert torch.all((d < 1e-9) | (d > 1 - 1e-9))  # Cartesian MRI is diagonal in frequencies: exact 0/1
    assert abs(float(d.mean()) - (1 - float(mri.mask.mean()))) < 1e-9
    sr = unknown_diagonal(SuperResolution(4), torch.zeros(1, 1, 32, 32), basis="fourier", probes=32)
    assert abs(float(sr.mean()) - 15 / 16) < 0.01  # rank of the low-pass band: 1/16 of the elements


def test_calibration_is_reproducible_and_batch_independent(sched):
    """Per-item generators: the same estimates whatever the batch size; given values skip the sampling."""
    cov = 0.25 * 0.8 ** torch.cdist(torch.arange(64.0)[:, None], torch.arange(64.0)[:, None]).double()
    prior = DenseGaussianPrior(torch.zeros(64, dtype=torch.float64), cov, (1, 8, 8))
    denoiser = GaussianDenoiser(prior, sched)
    op = Inpainting.box(8, 4)
    data = prior.sample(5, torch.Generator().manual_seed(3)).float()

    def pinv(y, op):
        return op.pinv(y)

    kw = dict(num_images=5, estimate_steps=20, seed=7, sigma_y=0.05)
    a = calibrate(denoiser, sched, op, pinv, data, batch_size=1, **kw)
    b = calibrate(denoiser, sched, op, pinv, data, batch_size=3, **kw)
    torch.testing.assert_close(a["err2"], b["err2"])
    torch.testing.assert_close(a["post_var"], b["post_var"])
    assert float(a["post_var"].sum()) > 0
    choice = auto_t0(denoiser, sched, op, pinv, data, num_steps=100, calib_images=5, estimate_steps=20, seed=7)
    assert choice.source == {"init_mse": "calibration", "post_var": "calibration"} and choice.calib_images == 5
    given = auto_t0(denoiser, sched, op, pinv, data, num_steps=100, init_mse=0.1, post_var=0.01)
    assert given.source == {"init_mse": "given", "post_var": "given"} and given.calib_images == 0
    assert given.estimate_steps is None and given.helps and given.init_mse == pytest.approx(0.1)
    with pytest.raises(ValueError, match="post_var must be > 0"):
        auto_t0(denoiser, sched, op, pinv, data, num_steps=100, init_mse=0.1, post_var=0.0)


@pytest.mark.e2e  # python run.py
def test_app_auto_t0_records_the_estimates(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_app(
        "task=inpaint", "debug=smoke", "sampler.t0=auto", "auto_t0.calib_images=2", "auto_t0.estimate_steps=20",
        "eval.fid=false", "eval.lpips=false", f"hydra.run.dir={run_dir}", f"eval.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    auto = m["auto_t0"]
    assert m["t0"] == auto["t0"] == m["sampler"]["t0"] and m["reverse_steps"] == round(auto["t0"] * 100)
    assert auto["source"] == {"init_mse": "calibration", "post_var": "calibration"} and auto["calib_images"] == 2
    assert auto["init_mse"] > auto["post_var"] > 0 and auto["helps"] and auto["basis"] == "fourier"
    assert abs(auto["unknown_fraction"] - 0.7) < 0.02  # 70% of the pixels are missing
    assert "auto t0 = " in proc.stdout + proc.stderr
    # the resolved config keeps "auto" (what was asked); metrics.json has the number
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").sampler.t0 == "auto"


def _compose(overrides):

    return compose_cfg(overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["sampler.t0=0"], "t0 must be in (0, 1]"),
        (["sampler.t0=1.5"], "t0 must be in (0, 1]"),
        (["sampler.t0=auto", "eval.t0s=[0.1,0.2]"], "cannot be combined with eval.t0s"),
        (["sampler.t0=auto", "auto_t0.calib_images=0"], "auto_t0.calib_images must be >= 1"),
        (["sampler.t0=auto", "auto_t0.post_var=0"], "auto_t0.post_var must be > 0"),
        (["sampler.t0=auto", "auto_t0.basis=wavelet"], "auto_t0.basis must be one of"),
    ],
)
def test_bad_t0_values_are_clear_errors(overrides, message):
    from ccdf.app import validate

    cfg = _compose(["task=inpaint", *overrides])
    with pytest.raises(ValueError) as err:
        validate(cfg)
    assert message in str(err.value)


@pytest.mark.e2e  # python run.py
def test_bad_t0_string_fails_early_and_leaves_nothing(tmp_path):
    run_dir = tmp_path / "out" / "run"
    proc = run_app("task=inpaint", "sampler.t0=auto2", f"hydra.run.dir={run_dir}", ok=False)
    assert "sampler.t0 must be a number in (0, 1] or 'auto', got 'auto2'" in proc.stdout + proc.stderr
    assert not run_dir.exists()


def test_closed_form_of_the_linear_solvers():
    """Issue 15: every solver whose Gaussian chain is affine (ccdf.theory.solvers) gets a closed form: the DDIM
    form when it draws no noise after the start, the DDPM form otherwise; DPS and unknown pieces are refused."""
    from ccdf.sampling.conditioning import Conditioning
    from ccdf.sampling.guidance import DPS, PiGDM
    from ccdf.sampling.solvers import DDNM, DiffPIR, DPMSolverPP2M, StepSolver
    from ccdf.theory.auto import closed_form_of

    cases = [
        ({"solver": DDNM(eta=0.85), "dc": "none"}, "ddpm"),
        ({"solver": DDNM(eta=0.0), "dc": "none"}, "ddim"),
        ({"solver": DiffPIR(zeta=0.25), "dc": "none"}, "ddpm"),
        ({"solver": DiffPIR(zeta=0.0), "dc": "none"}, "ddim"),
        ({"solver": DPMSolverPP2M(), "dc": "prox"}, "ddim"),
        ({"solver": "dpmpp_2m"}, "ddim"),
        ({"solver": StepSolver("ddim", eta=1.0), "dc": PiGDM()}, "ddpm"),
        ({"solver": StepSolver("ddim"), "dc": PiGDM(weighting="score")}, "ddim"),
        ({"step": "ddpm", "dc": "prox"}, "ddpm"),
        ({"step": "ddim"}, "ddim"),
    ]
    for settings, form in cases:
        assert closed_form_of(settings) == form, settings
    with pytest.raises(ValueError, match=r"sampler.dc=DPS\(scale=0.5\): DPS's guidance is the gradient"):
        closed_form_of({"solver": StepSolver("ddpm"), "dc": DPS()})

    class Custom(Conditioning):
        pass

    with pytest.raises(ValueError, match="sampler.dc=Custom.*covered are project, prox, none"):
        closed_form_of({"dc": Custom()})
    with pytest.raises(ValueError, match="sampler.t0=auto does not cover sampler.corrector='langevin2'"):
        closed_form_of({"corrector": "langevin2"})


@pytest.mark.parametrize(
    "overrides", [["sampler=ddnm"], ["sampler=diffpir"], ["sampler=dpmpp_2m"], ["sampler=pigdm"], ["sampler.dc=prox"]]
)
def test_auto_t0_accepts_the_linear_solvers(overrides):
    """Before issue 15 each of these was refused ("sampler.t0=auto does not cover sampler=...")."""
    from ccdf.app import validate

    validate(_compose(["task=inpaint", "sampler.t0=auto", *overrides]))


def test_posterior_samples_use_the_runs_sigma_y():
    """The calibration's posterior samples run with the run's sigma_y: the prox data step (and DDNM+, PiGDM)
    depends on it. Before, sample_ccdf got no sigma_y, so prox ran as the projection whatever the noise."""
    from tests.helpers import periodic_cov

    cov = periodic_cov(8)  # correlated: the noisier known pixels change the unknown ones' spread
    prior = DenseGaussianPrior(torch.zeros(8, dtype=torch.float64), cov, (1, 1, 8))
    sched = DiscreteVP.linear(100)
    mask = torch.ones(1, 8, dtype=torch.float64)
    mask[0, 2:6] = 0
    op = Inpainting(mask)
    x0 = prior.sample(3, torch.Generator().manual_seed(0))
    y = op(x0)
    out = []
    for sigma_y in (0.0, 0.5):
        gens = [torch.Generator().manual_seed(i) for i in range(6)]
        out.append(
            posterior_variance_sum(
                GaussianDenoiser(prior, sched),
                sched,
                op,
                y,
                x0,
                num_steps=10,
                generators_a=gens[:3],
                generators_b=gens[3:],
                sampler_kwargs={"dc": "prox"},
                basis="pixel",
                sigma_y=sigma_y,
            )  # fmt: skip
        )
    assert not torch.allclose(out[0], out[1])


@pytest.mark.e2e  # the whole app with calibration, about 9 s (make test-e2e)
def test_app_auto_t0_runs_with_ddnm(tmp_path):
    """``sampler=ddnm sampler.t0=auto`` at tiny size (noisy y: the DDNM+ path) chooses, records and uses t0."""
    run_dir = tmp_path / "run"
    run_app(
        "task=inpaint", "debug=smoke", "sampler=ddnm", "sampler.t0=auto", "sigma_y=0.05", "auto_t0.calib_images=1",
        "auto_t0.estimate_steps=5", "sampler.num_steps=20", "dataset.max_images=1", "dataset.size=32", "eval.fid=false", "eval.lpips=false", f"hydra.run.dir={run_dir}",
        f"eval.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    m = json.loads((run_dir / "metrics.json").read_text())
    auto = m["auto_t0"]
    assert auto["sampler"] == "ddpm"  # DDNM with eta = 0.85 draws noise: the DDPM form
    assert m["t0"] == auto["t0"] == m["sampler"]["t0"] and m["reverse_steps"] == round(auto["t0"] * 20)
    assert m["sampler"]["solver"]["_target_"] == "ccdf.sampling.solvers.DDNM"
    assert auto["init_mse"] > auto["post_var"] > 0
