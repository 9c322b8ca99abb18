"""Speed contracts: no host-device synchronisation in the sampling loop, and the speed switches' error bounds.

The sync test runs on the CPU: the sampler's state (``x_init``, ``y`` and the operator's mask) is a
tensor subclass that fails on every call that would block the host on a device (``.item()``,
``bool()``, ``float()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``nonzero``); everything computed from
it inherits the subclass. Host values (the time grid, the schedule) are plain tensors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from ccdf.denoisers.adapters import EpsDenoiser, load_demo_prior
from ccdf.denoisers.base import as_output
from ccdf.denoisers.speed import FastDenoiser, speed_up
from ccdf.nets.guided_unet import GuidedUNet
from ccdf.operators import Inpainting, SuperResolution, measure
from ccdf.sampling import sample_ccdf
from ccdf.sampling.guidance import DPS, PiGDM
from ccdf.sampling.solvers import SOLVERS
from ccdf.schedules import DiscreteVP
from ccdf.utils.rng import per_sample_generators

ROOT = Path(__file__).resolve().parents[1]

_SYNCS = {
    Tensor.item: "item()",
    Tensor.__bool__: "bool()",
    Tensor.__float__: "float()",
    Tensor.__int__: "int()",
    Tensor.__index__: "index()",
    Tensor.tolist: "tolist()",
    Tensor.cpu: "cpu()",
    Tensor.numpy: "numpy()",
    Tensor.nonzero: "nonzero()",
    torch.nonzero: "torch.nonzero()",
}


class HostSync(AssertionError):
    pass


class DeviceState(Tensor):
    """A tensor that stands for data on an accelerator: reading it back on the host fails."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _SYNCS:
            raise HostSync(f"host-device synchronisation: {_SYNCS[func]} on the sampler's state")
        return super().__torch_function__(func, types, args, kwargs or {})


def on_device(x: Tensor) -> DeviceState:
    return x.as_subclass(DeviceState)


@pytest.fixture(scope="module")
def prior():
    schedule = DiscreteVP.linear()
    return load_demo_prior(schedule), schedule


def _problem(kind: str, size: int = 16, batch: int = 3):
    x0 = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if kind == "inpaint":
        mask = (torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1)) < 0.6).float()
        op = Inpainting(mask)  # checked at construction (before sampling); then the mask lives "on the device"
        op.mask = on_device(op.mask)
    else:
        op = SuperResolution(4)
    y = measure(op, x0, 0.05, per_sample_generators(0, range(batch)))
    return op, on_device(y), on_device(op.pinv(y))


SOLVER_CASES = [(s, dc) for s in ("ddpm", "ddim", "ve_pc", "dpmpp_2m", "ddnm", "diffpir") for dc in ("project", "prox")]


def test_guard_catches_a_sync() -> None:
    """The positive control: the guard fails on each kind of read-back, and lets ordinary maths through."""
    x = on_device(torch.ones(2))
    assert isinstance(x * 2 + 1, DeviceState)
    for read_back in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x.tolist(), lambda: x.cpu(),
                      lambda: float(x[0]), lambda: x.nonzero()):  # fmt: skip
        with pytest.raises(HostSync):
            read_back()


@pytest.mark.parametrize("kind", ["superres", "inpaint"])
@pytest.mark.parametrize(("solver", "dc"), SOLVER_CASES)
def test_sampling_loop_never_reads_the_state_back(prior, solver: str, dc: str, kind: str) -> None:
    """Every gradient-free solver, with the projection and the prox data steps, per-item t0 (items join
    mid-pass) and per-item generators: no call on the state blocks the host, and the result matches the
    run on plain tensors bit for bit (the guard changes nothing but the checks)."""
    den, schedule = prior
    op, y, x_init = _problem(kind)
    kw = dict(t0=[0.004, 0.006, 0.004], num_steps=1000, solver=SOLVERS[solver](), dc=dc, sigma_y=0.05)
    out = sample_ccdf(den, schedule, op, y, x_init, generator=per_sample_generators(1, range(3)), **kw)
    assert isinstance(out, DeviceState)
    plain = sample_ccdf(den, schedule, op, y.as_subclass(Tensor), x_init.as_subclass(Tensor),
                        generator=per_sample_generators(1, range(3)), **kw)  # fmt: skip
    assert torch.equal(out.as_subclass(Tensor), plain)


@pytest.mark.parametrize("cond", [DPS(0.3), PiGDM(1.0)], ids=["dps", "pigdm"])
def test_gradient_guidance_never_reads_the_state_back(prior, cond) -> None:
    """DPS and PiGDM (vector-Jacobian products through the net) keep the state on the device too."""
    den, schedule = prior
    op, y, x_init = _problem("superres")
    out = sample_ccdf(den, schedule, op, y, x_init, t0=0.004, num_steps=1000, solver=SOLVERS["ddim"](), dc=cond,
                      generator=per_sample_generators(1, range(3)))  # fmt: skip
    assert out.shape == x_init.shape


class _NoMemo:
    """The same schedule without its :class:`~ccdf.schedules.base.TimeMemo` for the solvers' coefficients
    (``memoized`` then computes every step's coefficients afresh, as the code before the memo did)."""

    _memo = None

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(("solver", "dc"), SOLVER_CASES)
def test_memoised_coefficients_change_no_bits(prior, solver: str, dc: str) -> None:
    """Each step's coefficients come from the schedule's memo (keyed by the times, the solver's settings and the
    state's dtype, rank, batch and device): two runs through the memo (the second reads it) equal, bit for bit,
    a run that computes every coefficient afresh, with per-item t0 (items join mid-pass, [B] times)."""
    den, schedule = prior
    op, y, x_init = _problem("superres")
    y, x_init = y.as_subclass(Tensor), x_init.as_subclass(Tensor)
    kw = dict(t0=[0.004, 0.006, 0.004], num_steps=1000, solver=SOLVERS[solver](), dc=dc, sigma_y=0.05)
    runs = [sample_ccdf(den, sched, op, y, x_init, generator=per_sample_generators(1, range(3)), **kw)
            for sched in (schedule, schedule, _NoMemo(schedule))]  # fmt: skip
    assert torch.equal(runs[0], runs[2]) and torch.equal(runs[1], runs[2])


def test_memo_keeps_each_setting_apart(prior) -> None:
    """The memo's key holds the solver's settings: settings that share the grid's times (DDIM's eta, the
    ancestral variance, the corrector's snr and step rule) each get their own coefficients, in any order, on
    one schedule, bit for bit as computed afresh."""
    from ccdf.sampling.solvers import StepSolver

    den, schedule = prior
    op, y, x_init = _problem("superres", batch=2)
    y, x_init = y.as_subclass(Tensor), x_init.as_subclass(Tensor)
    solvers = [StepSolver("ddim", eta=0.0), StepSolver("ddim", eta=0.5), StepSolver("ddpm", variance="beta_tilde"),
               StepSolver("ddpm"), StepSolver("ancestral", corrector="langevin", snr=0.3),
               StepSolver("ancestral", corrector="langevin"),
               StepSolver("ancestral", corrector="langevin", corrector_step="norm")]  # fmt: skip
    for solver in solvers:
        kw = dict(t0=0.003, num_steps=1000, solver=solver, dc="project")
        memo, fresh = (sample_ccdf(den, sched, op, y, x_init, generator=per_sample_generators(2, range(2)), **kw)
                       for sched in (schedule, _NoMemo(schedule)))  # fmt: skip
        assert torch.equal(memo, fresh), solver
    outs = {sample_ccdf(den, schedule, op, y, x_init, t0=0.003, num_steps=1000, solver=solver,
                        generator=per_sample_generators(2, range(2))).sum().item() for solver in solvers[:2]}  # fmt: skip
    assert len(outs) == 2  # eta changes the result (the check above compares different things)


class _HostScalarMath(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the arithmetic on small floating tensors (at most ``limit`` entries: a time, a coefficient, one
    value per item); views and copies of them are not arithmetic."""

    passive = {"lift_fresh", "view", "select", "expand", "_to_copy", "alias", "detach", "slice", "unsqueeze",
               "reshape", "_unsafe_view", "clone", "copy_", "empty", "_local_scalar_dense"}  # fmt: skip

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.ops = limit, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        small = isinstance(out, Tensor) and out.numel() <= self.limit and out.dtype.is_floating_point
        if small and func.__name__.split(".")[0] not in self.passive:
            self.ops.append(str(func))
        return out


@pytest.mark.parametrize("solver", ["ddpm", "ddim", "ve_pc", "dpmpp_2m"])
def test_repeated_run_does_no_host_scalar_math(prior, solver: str) -> None:
    """Once a grid has been run, running it again does no arithmetic on host scalars: every step's coefficients
    (the step rule's, the corrector's, the eps -> x0 conversion's, the diffused measurement's) and the net's
    time input come from the schedule's memo. Before the memo a 5-step run did 120-370 such tensor ops (each
    a few microseconds of host time: the loop overhead at small images)."""
    den, schedule = prior
    op, y, x_init = _problem("superres", batch=2)
    y, x_init = y.as_subclass(Tensor), x_init.as_subclass(Tensor)

    def run() -> Tensor:
        return sample_ccdf(den, schedule, op, y, x_init, t0=0.005, num_steps=1000, solver=solver, dc="project",
                           generator=per_sample_generators(0, range(2)))  # fmt: skip

    first = run()
    with _HostScalarMath(limit=4) as mode:
        again = run()
    assert mode.ops == []
    assert torch.equal(first, again)


# ----------------------------------------------------------------------------------------------------- switches


def _x_t(shape=(2, 3, 32, 32)) -> tuple[Tensor, Tensor]:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    return x, torch.full((shape[0],), 0.3, dtype=torch.float64)


def test_default_switches_return_the_denoiser_itself(prior) -> None:
    """fp32 without a switch is the denoiser object itself: the default path stays bit-identical."""
    den, _ = prior
    assert speed_up(den) is den
    with pytest.raises(ValueError, match="model.precision"):
        speed_up(den, precision="fp16")
    with pytest.raises(ValueError, match="model.compile_mode"):
        speed_up(den, compile=True, compile_mode="fast")


def test_bf16_autocast_agrees_with_fp32(prior) -> None:
    """bf16 autocast of the demo prior: x0_hat within 0.05 (max abs, model range [-1, 1]) and 0.01 RMS of
    fp32 at t = 0.3; a 5-step DDIM reconstruction within 0.02 RMS. bf16 keeps 8 mantissa bits (relative
    rounding 2^-9 = 0.002 per operation); measured here: ~0.01 max, ~0.002 RMS. Output dtype is fp32."""
    den, schedule = prior
    x, t = _x_t((2, 3, 16, 16))  # small: bf16 convolutions are slow on CPUs without bf16 units
    with torch.no_grad():
        ref = as_output(den(x, t)).x0_hat
        fast = speed_up(den, precision="bf16")
        got = as_output(fast(x, t)).x0_hat
    assert got.dtype == torch.float32
    err = got - ref
    assert 0 < err.abs().max() < 0.05  # not the same bits: autocast did act
    assert err.pow(2).mean().sqrt() < 0.01
    op, y, x_init = _problem("superres", size=16, batch=2)
    y, x_init = y.as_subclass(Tensor), x_init.as_subclass(Tensor)
    kw = dict(t0=0.005, num_steps=1000, solver=SOLVERS["ddim"]())
    a = sample_ccdf(den, schedule, op, y, x_init, generator=per_sample_generators(0, range(2)), **kw)
    b = sample_ccdf(fast, schedule, op, y, x_init, generator=per_sample_generators(0, range(2)), **kw)
    assert (a - b).pow(2).mean().sqrt() < 0.02


def test_channels_last_agrees_with_fp32() -> None:
    """channels-last: the same convolutions in NHWC order; float32 reassociation only (< 1e-5 at unit scale).
    The output is contiguous in the usual layout; the original denoiser object is not replaced."""
    schedule = DiscreteVP.linear()
    torch.manual_seed(0)
    net = GuidedUNet(image_size=32, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                     attention_resolutions=(2,), channel_mult=(1, 2))  # fmt: skip
    den = EpsDenoiser(net, schedule)
    x, t = _x_t()
    with torch.no_grad():
        ref = den(x, t).x0_hat
        fast = speed_up(den, channels_last=True)
        got = fast(x, t).x0_hat
    assert net.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert got.is_contiguous()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def _tiny_denoiser() -> EpsDenoiser:
    torch.manual_seed(0)
    net = GuidedUNet(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                     attention_resolutions=(), channel_mult=(1, 2))  # fmt: skip
    return EpsDenoiser(net, DiscreteVP.linear())


@pytest.mark.e2e  # torch.compile tracing, about 6 s (make test-e2e)
def test_compile_wiring_traces_the_network_and_agrees() -> None:
    """``compile=True`` compiles the network alone (in a copy of the adapter: the denoiser passed in keeps
    its eager net). With the ``aot_eager`` backend (dynamo + AOT autograd, no code generation: seconds on a
    CPU) the result equals eager within float32 reassociation (1e-5)."""
    den = _tiny_denoiser()
    eager_net = den.net
    fast = speed_up(den, compile=True, compile_backend="aot_eager")
    assert isinstance(fast, FastDenoiser) and fast.compiled
    assert den.net is eager_net and fast.network is not eager_net
    x, t = _x_t((2, 3, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t).x0_hat, den(x, t).x0_hat, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inductor_compile_agrees_with_eager() -> None:
    """inductor (C++ code generation; gcc here) agrees with eager within 1e-4. Marked slow: compiling even a
    tiny UNet took 280 s on this project's shared 2-core machine (run it with ``make test-full``)."""
    den = _tiny_denoiser()
    fast = speed_up(den, compile=True)
    x, t = _x_t((2, 3, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t).x0_hat, den(x, t).x0_hat, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ benchmark scripts


@pytest.mark.slow
def test_device_bench_runs_end_to_end_tiny(tmp_path: Path) -> None:
    """experiments/device_bench.sh --tiny: the GPU sweep at a tiny size on the CPU writes its JSON with every
    case (3 variants x 2 batches, DPS at 2 batches) and a positive projected wall time. Marked slow (runs in
    ``make test-full``): about 25 s of CPU, over 2 minutes of wall time on the shared 2-core machine (a fresh
    process, bf16 convolutions without bf16 units, dynamo tracing per batch size)."""
    import json

    out = tmp_path / "device.json"
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "device_bench.sh"), "--tiny", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHON": sys.executable})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["tiny"] is True
    assert [(c["batch"], c["precision"], c["compiled"]) for c in report["cases"]] == [
        (b, p, c) for b in (1, 2) for p, c in (("fp32", False), ("bf16", False), ("bf16", True))
    ]
    assert [c["batch"] for c in report["dps"]] == [1, 2] and all(c["dc"] == "dps" for c in report["dps"])
    for case in report["cases"] + report["dps"]:
        assert case["ms_per_image_nfe"] > 0 and case["peak_memory_mib"] > 0 and "overhead" in case
    assert report["projection_1000_sr8_20nfe"]["wall_s"] > 0


# ---------------------------------------------------------------------------------------------- app wiring


def test_app_builds_the_switches_and_metrics_record_them(tmp_path: Path) -> None:
    """``model.precision`` etc. are applied where the denoiser is built; metrics.json records precision and
    compiled; the result cache's key is unchanged by default switches and changed by bf16; a bad value is
    refused naming its key."""
    import json

    import ccdf.app as app
    from tests.helpers import SMOKE, app_cfg

    default = app_cfg(tmp_path, *SMOKE, run="default")
    assert not {"precision", "channels_last", "compile", "compile_mode"} & set(app.eval_setting(default)["model"])
    assert not isinstance(app.build(default).denoiser, FastDenoiser)
    cfg = app_cfg(tmp_path, *SMOKE, "model.precision=bf16", run="bf16")
    assert app.eval_setting(cfg)["model"]["precision"] == "bf16"
    comps = app.build(cfg)
    assert isinstance(comps.denoiser, FastDenoiser) and comps.denoiser.precision == "bf16"
    app.main(cfg)
    result = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert (result["precision"], result["compiled"]) == ("bf16", False)
    with pytest.raises(ValueError, match="model.precision must be one of"):
        app.build(app_cfg(tmp_path, *SMOKE, "model.precision=fp8", run="bad"))


# ------------------------------------------------------------------------------------------ per-item noise


def test_sampler_generators_on_the_cpu_continue_the_measurement_streams() -> None:
    """On the CPU the sampler keeps each item's measurement generator (results bit-identical to before);
    another stream of (seed, index) gives other numbers, keyed by index whatever the order."""
    from ccdf.utils.rng import sampler_generators

    gens = per_sample_generators(3, [7, 2])
    assert sampler_generators(3, [7, 2], "cpu", gens) is gens
    s1 = per_sample_generators(3, [7, 2], stream=1)
    s1_rev = per_sample_generators(3, [2, 7], stream=1)
    a = [torch.randn(4, generator=g) for g in s1]
    b = [torch.randn(4, generator=g) for g in s1_rev]
    assert torch.equal(a[0], b[1]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], torch.randn(4, generator=per_sample_generators(3, [7])[0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_is_batch_invariant_with_device_generators(prior) -> None:
    """On CUDA, with Philox generators on the device and the net per item: an image's result is the same bits
    in a batch of 3 as alone (the determinism contract of ccdf.utils.rng)."""
    from ccdf.denoisers.base import PerItemDenoiser
    from ccdf.utils.rng import sampler_generators

    den, schedule = prior
    den = PerItemDenoiser(den.to("cuda"))
    op, y, x_init = _problem("superres")
    y, x_init = y.as_subclass(Tensor).cuda(), x_init.as_subclass(Tensor).cuda()
    kw = dict(t0=0.01, num_steps=1000, solver=SOLVERS["ddpm"]())
    gens = sampler_generators(0, [0, 1, 2], "cuda", per_sample_generators(0, [0, 1, 2]))
    assert all(g.device.type == "cuda" for g in gens)
    full = sample_ccdf(den, schedule, op, y, x_init, generator=gens, **kw)
    one = sample_ccdf(den, schedule, op, y[1:2], x_init[1:2],
                      generator=sampler_generators(0, [1], "cuda", per_sample_generators(0, [1])), **kw)  # fmt: skip
    assert torch.equal(full[1:2], one)
