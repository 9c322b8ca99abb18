"""Time the sampling loop against the bare network: overhead ratio, ms per image-NFE, peak memory.

    OMP_NUM_THREADS=1 python experiments/bench_sampling.py --net demo_prior --size 32 --batch 1 --solver ddpm
    python experiments/bench_sampling.py --device cuda --net ffhq256 --size 256 --batch 16 --precision bf16

For a network (``demo_prior``: the shipped 1.1M-parameter UNet; ``ffhq256``: the official FFHQ-256
guided-diffusion architecture with random weights; ``gaussian``: the exact stationary prior, no
network), a size, a batch, a solver (with the projection data step, CCDF's default, on x4
super-resolution) and a device, each repeat times, in alternating order:

* ``loop``: ``sample_ccdf`` over ``--steps`` grid steps (NFE = the solver's evaluations);
* ``bare``: the same number of forwards of the network alone on a fixed input.

The overhead is the median over repeats of loop / bare - 1 (paired per repeat, so a load change on
shared cores hits both), printed with its interquartile range over repeats: on a shared or virtual
machine that range is several points wide. On the CPU the loop's runs also time the network's forwards
inside the loop (forward hooks), and the rest of the loop's time is printed as ``own``: the loop's own
work per network evaluation, as a share of the network's time in the same run. It is measured within one
run, so other jobs' noise largely cancels; what it leaves out is any slowdown of the network inside the
loop (``net_in_loop_vs_bare`` in the JSON, as noisy as the overhead). Also printed: ms per image per
network evaluation, peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak resident set),
the load average. ``--json`` writes everything (default: experiments/results/bench/<case>.json).

``--suite device`` runs the GPU sweep of ``experiments/device_bench.sh`` in one process (FFHQ-256
UNet at batch 1/16/64 in fp32, bf16 and compiled; DPS's backward at batch 1/16; the projected wall
time of 1000 x8-SR images at 20 NFE). ``--tiny`` runs the same sweep at a tiny size on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ccdf.data import bundled_samples, stack_images  # noqa: E402
from ccdf.denoisers import GaussianDenoiser  # noqa: E402
from ccdf.denoisers.adapters import EpsDenoiser, load_demo_prior  # noqa: E402
from ccdf.denoisers.base import PerItemDenoiser  # noqa: E402
from ccdf.denoisers.gaussian import fit_stationary_prior  # noqa: E402
from ccdf.denoisers.speed import FastDenoiser, speed_up  # noqa: E402
from ccdf.operators import SuperResolution, measure  # noqa: E402
from ccdf.sampling import sample_ccdf  # noqa: E402
from ccdf.sampling.guidance import DPS  # noqa: E402
from ccdf.sampling.solvers import SOLVERS  # noqa: E402
from ccdf.schedules import DiscreteVP  # noqa: E402
from ccdf.utils.rng import per_sample_generators  # noqa: E402

NUM_STEPS = 1000  # N of the grid; the loop takes --steps of it (t0 = steps / N)
RESULTS = ROOT / "experiments" / "results" / "bench"


def build_denoiser(net: str, size: int, device: torch.device, tiny: bool = False):
    """(denoiser, schedule): the demo prior, the FFHQ-256 guided UNet (random weights) or the Gaussian prior."""
    schedule = DiscreteVP.linear()
    if net == "demo_prior":
        return load_demo_prior(schedule, device=str(device)), schedule
    if net == "ffhq256":
        from ccdf.checkpoints import build_net
        from ccdf.nets.guided_unet import guided_unet_config

        config = guided_unet_config("ffhq256")
        if tiny:  # the same architecture, narrow and shallow: runs on a CPU in seconds
            config.update(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_resolutions=(2,),
                          num_head_channels=32)  # fmt: skip
        torch.manual_seed(0)
        return EpsDenoiser(build_net("guided_unet", config).to(device).eval(), schedule), schedule
    if net == "gaussian":
        prior = fit_stationary_prior(bundled_samples("ffhq", "prior", size=size)).to(device)
        return GaussianDenoiser(prior, schedule), schedule
    raise ValueError(f"unknown --net {net!r}; choose demo_prior, ffhq256 or gaussian")


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the process's peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(
    *,
    net: str = "demo_prior",
    size: int = 32,
    batch: int = 1,
    solver: str = "ddpm",
    steps: int = 20,
    repeats: int = 15,
    device: str = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    compile_backend: str = "inductor",
    per_item: bool = False,
    dc: str = "project",
    factor: int = 4,
    tiny: bool = False,
    built: tuple | None = None,
) -> dict[str, Any]:
    """One case: loop and bare forwards, interleaved; returns the numbers (see the module docstring)."""
    dev = torch.device(device)
    base, schedule = built if built is not None else build_denoiser(net, size, dev, tiny)
    den = speed_up(base, precision=precision, channels_last=channels_last, compile=compile,
                   compile_backend=compile_backend)  # fmt: skip
    sampler_den = PerItemDenoiser(den) if per_item else den
    faces = stack_images(bundled_samples("ffhq", "eval", size=size))
    x0 = faces[torch.arange(batch) % len(faces)].to(dev)
    op = SuperResolution(factor).to(dev)
    gens = per_sample_generators(0, range(batch), device=dev)
    y = measure(op, x0, 0.0, per_sample_generators(0, range(batch)))
    x_init = op.pinv(y)
    solver_obj = SOLVERS[solver]()
    cond = DPS(0.3) if dc == "dps" else dc
    nfe = solver_obj.nfe(steps)

    def loop() -> None:
        sample_ccdf(sampler_den, schedule, op, y, x_init, t0=steps / NUM_STEPS, num_steps=NUM_STEPS,
                    solver=solver_obj, dc=cond, generator=gens)  # fmt: skip

    bare = None
    network = None
    if net != "gaussian":
        network = den.network if isinstance(den, FastDenoiser) else base.net
        ctx = den.context if isinstance(den, FastDenoiser) else (lambda _: contextlib.nullcontext())
        x_bare = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)).to(dev)
        if channels_last:
            x_bare = x_bare.contiguous(memory_format=torch.channels_last)
        t_bare = torch.full((batch,), steps - 1, dtype=torch.long, device=dev)
        grad = dc == "dps"

        def bare() -> None:
            for _ in range(nfe):
                with torch.enable_grad() if grad else torch.no_grad(), ctx(dev.type):
                    if grad:
                        xb = x_bare.detach().requires_grad_(True)
                        (g,) = torch.autograd.grad(network(xb, t_bare).float().square().sum(), xb)
                    else:
                        network(x_bare, t_bare)

    # warm-up (compilation, allocator, oneDNN primitives), then reset the peak
    tic = time.perf_counter()
    loop()
    if bare is not None:
        bare()
    _sync(dev)
    warmup = time.perf_counter() - tic
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    loop_s, bare_s, loop_cpu, bare_cpu, net_s = [], [], [], [], []
    # the network's own time inside the loop (CPU: forward hooks, attached during the loop's runs only); the rest of
    # the loop's time is its own work, measured in the same run and so far less noisy than loop / bare
    split = network is not None and dev.type == "cpu" and not compile
    for r in range(repeats):
        order = (loop, bare) if r % 2 == 0 else (bare, loop)
        for fn in order:
            if fn is None:
                continue
            timer = _NetTimer(network) if fn is loop and split else contextlib.nullcontext()
            _sync(dev)
            with timer:
                tic, cpu = time.perf_counter(), time.process_time()
                fn()
                _sync(dev)
                elapsed = time.perf_counter() - tic
            (loop_s if fn is loop else bare_s).append(elapsed)
            (loop_cpu if fn is loop else bare_cpu).append(time.process_time() - cpu)
            if fn is loop and split:
                net_s.append(timer.seconds)
    res: dict[str, Any] = dict(
        net=net, size=size, batch=batch, solver=solver, dc=dc, steps=steps, nfe=nfe, repeats=repeats,
        device=str(dev), precision=precision, channels_last=channels_last, compiled=compile, per_item=per_item,
        compile_backend=compile_backend if compile else None, operator=f"superres x{factor}",
        warmup_s=warmup, loop_s=loop_s, bare_s=bare_s, loop_median_s=statistics.median(loop_s),
        ms_per_image_nfe=statistics.median(loop_s) / (batch * nfe) * 1e3, peak_memory_mib=peak_memory_mib(dev),
    )  # fmt: skip
    if net_s:
        own = [(a - n) / n for a, n in zip(loop_s, net_s, strict=True)]
        res.update(net_in_loop_s=net_s, own_overhead=statistics.median(own),
                   own_ms_per_nfe=statistics.median([(a - n) / nfe * 1e3 for a, n in zip(loop_s, net_s, strict=True)]),
                   net_in_loop_vs_bare=statistics.median(net_s) / statistics.median(bare_s) - 1)  # fmt: skip
    if bare_s:
        ratios = [a / b - 1 for a, b in zip(loop_s, bare_s, strict=True)]
        quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        res["overhead_quartiles"] = [quart[0], quart[2]]
        if dev.type == "cpu":  # CPU time of this process: what the loop costs, whatever else shares the cores
            res["overhead_cpu_time"] = statistics.median([a / b - 1 for a, b in zip(loop_cpu, bare_cpu, strict=True)])
        res.update(bare_median_s=statistics.median(bare_s), overhead=statistics.median(ratios),
                   overhead_of_medians=statistics.median(loop_s) / statistics.median(bare_s) - 1,
                   bare_ms_per_image_nfe=statistics.median(bare_s) / (batch * nfe) * 1e3)  # fmt: skip
    return res


class _NetTimer:
    """Adds up the wall time of a module's forwards while active (a pre- and a post-forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.seconds, self._tic, self._hooks = module, 0.0, 0.0, []

    def __enter__(self) -> _NetTimer:
        def pre(*_: Any) -> None:
            self._tic = time.perf_counter()

        def post(*_: Any) -> None:
            self.seconds += time.perf_counter() - self._tic

        self._hooks = [self.module.register_forward_pre_hook(pre), self.module.register_forward_hook(post)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()


def describe(res: dict[str, Any]) -> str:
    over = f"overhead {100 * res['overhead']:+6.2f}%" if "overhead" in res else "overhead    n/a"
    if "overhead_quartiles" in res:
        lo, hi = res["overhead_quartiles"]
        over += f" [IQR {100 * lo:+.1f}..{100 * hi:+.1f}]"
    if "own_overhead" in res:
        over += f" own {100 * res['own_overhead']:+5.2f}% ({res['own_ms_per_nfe']:.3f} ms/NFE)"
    flags = res["precision"] + (" compiled" if res["compiled"] else "") + (" per-item" if res["per_item"] else "")
    return (f"{res['net']:10s} {res['size']:4d}px b{res['batch']:<3d} {res['solver']:9s} {res['dc']:7s} {flags:18s} "
            f"NFE {res['nfe']:3d}  loop {res['loop_median_s'] * 1e3:9.2f} ms  {over}  "
            f"{res['ms_per_image_nfe']:8.3f} ms/(image NFE)  peak {res['peak_memory_mib']:8.1f} MiB")  # fmt: skip


def environment() -> dict[str, Any]:
    return dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                load_average=os.getloadavg(), cpu_count=os.cpu_count(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)  # fmt: skip


def device_suite(tiny: bool, device: str, out: Path) -> dict[str, Any]:
    """The GPU sweep (experiments/device_bench.sh); ``tiny``: the same sweep, small, on the CPU."""
    dev = torch.device(device)
    size = 16 if tiny else 256
    batches = (1, 2) if tiny else (1, 16, 64)
    steps, repeats = (1, 1) if tiny else (5, 3)
    backend = "aot_eager" if tiny else "inductor"  # tiny: trace without code generation (inductor: minutes on a CPU)
    variants = [dict(precision="fp32"), dict(precision="bf16"),
                dict(precision="bf16", compile=True, compile_backend=backend)]  # fmt: skip
    built = build_denoiser("ffhq256", size, dev, tiny)
    report: dict[str, Any] = dict(environment=environment(), tiny=tiny, cases=[], dps=[])
    t_start = time.perf_counter()
    for batch in batches:
        for v in variants:
            res = bench_case(net="ffhq256", size=size, batch=batch, solver="ddim", steps=steps, repeats=repeats,
                             device=device, tiny=tiny, built=built, factor=8, **v)  # fmt: skip
            print(describe(res), flush=True)
            report["cases"].append(res)
    for batch in batches[:2]:
        res = bench_case(net="ffhq256", size=size, batch=batch, solver="ddpm", steps=steps, repeats=repeats,
                         device=device, tiny=tiny, built=built, dc="dps", factor=8)  # fmt: skip
        print(describe(res), flush=True)
        report["dps"].append(res)
    best = min(report["cases"], key=lambda r: r["ms_per_image_nfe"])
    report["projection_1000_sr8_20nfe"] = dict(
        setting={k: best[k] for k in ("batch", "precision", "compiled")},
        ms_per_image_nfe=best["ms_per_image_nfe"],
        wall_s=best["ms_per_image_nfe"] * 20 * 1000 / 1e3,
        note="1000 images x 20 NFE (DDIM, x8-SR projection) at the fastest measured setting, loop included",
    )
    report["suite_seconds"] = time.perf_counter() - t_start
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"projected 1000 x8-SR images at 20 NFE: {report['projection_1000_sr8_20nfe']['wall_s']:.1f} s -> {out}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="demo_prior", choices=["demo_prior", "ffhq256", "gaussian"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--solver", default="ddpm", help="a key of ccdf.sampling.solvers.SOLVERS, or 'all'")
    parser.add_argument("--dc", default="project", choices=["project", "prox", "none", "dps"])
    parser.add_argument("--steps", type=int, default=20, help="grid steps of the loop (t0 = steps / 1000)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--per-item", action="store_true", help="PerItemDenoiser (eval.batch_invariant=true)")
    parser.add_argument("--suite", choices=["device"], help="run experiments/device_bench.sh's sweep")
    parser.add_argument("--tiny", action="store_true", help="with --suite: a tiny size on the CPU")
    parser.add_argument("--json", type=Path, help="output file (default under experiments/results/bench/)")
    args = parser.parse_args(argv)
    if args.suite:
        device = "cpu" if args.tiny else args.device
        return device_suite(args.tiny, device, args.json or RESULTS / f"device{'_tiny' if args.tiny else ''}.json")
    solvers = ["ddpm", "ddim", "ve_pc", "dpmpp_2m"] if args.solver == "all" else [args.solver]
    dev = torch.device(args.device)
    built = build_denoiser(args.net, args.size, dev)
    env = environment()
    print(f"torch {env['torch']} threads={env['threads']} load average {env['load_average']}")
    results = []
    for solver in solvers:
        res = bench_case(net=args.net, size=args.size, batch=args.batch, solver=solver, steps=args.steps,
                         repeats=args.repeats, device=args.device, precision=args.precision,
                         channels_last=args.channels_last, compile=args.compile, per_item=args.per_item, dc=args.dc,
                         built=built)  # fmt: skip
        print(describe(res), flush=True)
        results.append(res)
    env["load_average_after"] = os.getloadavg()
    out = args.json or RESULTS / (f"{args.net}_{args.size}_b{args.batch}_{args.solver}_{args.dc}_{dev.type}_"
                                  f"{args.precision}{'_compiled' if args.compile else ''}"
                                  f"{'_peritem' if args.per_item else ''}.json")  # fmt: skip
    report = dict(environment=env, command=" ".join(sys.argv), results=results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"-> {out}")
    return report


if __name__ == "__main__":
    main()
