r"""Speed switches for a denoiser's network: bf16 autocast, channels-last memory format, ``torch.compile``.

One wrapper, applied where the denoiser is built (``ccdf.app.build``, keys ``model.precision``,
``model.channels_last``, ``model.compile``, ``model.compile_mode``), so every solver, the counting and
the per-item wrappers see an ordinary denoiser. The default (fp32, no switch) returns the denoiser
itself: results stay bit-identical.

* ``precision="bf16"``: the whole denoiser call runs under ``torch.autocast`` (bfloat16 on the
  device of its input). Convolutions and matmuls of the network run in bf16; the adapter's
  arithmetic (x0_hat from eps) stays in the state's dtype, since the adapters cast the net's output
  back (:class:`ccdf.denoisers.adapters.EpsDenoiser`). Error bound measured in tests/test_speed.py.
* ``channels_last``: the network's 4-D parameters and its input use ``torch.channels_last`` (NHWC;
  faster convolutions on GPUs with tensor cores and on CPUs with oneDNN). The output is returned
  in the usual layout. This converts the wrapped network's parameters in place (``nn.Module.to``),
  which is why it is applied once, at build time.
* ``compile``: ``torch.compile`` of the denoiser (the adapter's host checks become graph breaks, the
  network one graph). ``compile_mode="reduce-overhead"`` adds CUDA graphs on a GPU (replays the
  network's kernels with one launch; GPU only, not used on the CPU). On the CPU, inductor needs a
  C compiler. Rounding differs from eager by float32 reassociation (bound in tests/test_speed.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from ccdf.denoisers.base import DenoiserOutput

PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


class FastDenoiser(nn.Module):
    """A denoiser run with the speed switches of :mod:`ccdf.denoisers.speed`.

    Args:
        denoiser: any denoiser ``D(x_t, t)``; its ``net`` attribute (the adapters') or the
            denoiser itself is converted to channels-last.
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        channels_last: NHWC memory format for the network and its input.
        compile: ``torch.compile`` the denoiser.
        compile_mode: the ``torch.compile`` mode.
        compile_backend: the ``torch.compile`` backend (``"aot_eager"`` traces without generating code:
            the tests' and ``--tiny`` benchmarks' quick check of the wiring).
    """

    def __init__(
        self,
        denoiser: nn.Module,
        *,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str = "default",
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        check_speed_options(precision, compile_mode)
        self.inner = denoiser
        self.precision, self.channels_last, self.compiled = precision, bool(channels_last), bool(compile)
        self.compile_mode = compile_mode
        net = getattr(denoiser, "net", None)
        if self.channels_last:
            (net if isinstance(net, nn.Module) else denoiser).to(memory_format=torch.channels_last)
        if self.compiled and isinstance(net, nn.Module):
            # compile the network alone (one graph; the adapter's host logic stays eager) in a shallow copy
            # of the adapter, so the denoiser passed in keeps its eager network
            adapter = copy.copy(denoiser)
            adapter._modules = dict(denoiser._modules)
            adapter.net = _compile(net, compile_mode, compile_backend)
            self.inner = adapter
        elif self.compiled:
            self.inner = _compile(denoiser, compile_mode, compile_backend)

    @property
    def network(self) -> nn.Module:
        """The network as the denoiser runs it (compiled when ``compile``), for timing bare forwards."""
        return getattr(self.inner, "net", self.inner)

    def context(self, device_type: str):
        """The autocast context of ``precision`` on ``device_type`` (a null context for fp32)."""
        return torch.autocast(device_type, dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()

    def extra_repr(self) -> str:
        return f"precision={self.precision}, channels_last={self.channels_last}, compiled={self.compiled}"

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor | DenoiserOutput:
        x_in = x_t.contiguous(memory_format=torch.channels_last) if self.channels_last and x_t.ndim == 4 else x_t
        with self.context(x_t.device.type):
            out = self.inner(x_in, t)
        if not self.channels_last:
            return out
        if not isinstance(out, DenoiserOutput):
            return out.contiguous()
        var = out.var_frac.contiguous() if out.var_frac is not None else None
        return DenoiserOutput(out.x0_hat.contiguous(), var)


def _compile(module: nn.Module, mode: str, backend: str) -> nn.Module:
    # inductor takes the mode; other backends take none
    return torch.compile(module, mode=mode) if backend == "inductor" else torch.compile(module, backend=backend)


def check_speed_options(precision: str, compile_mode: str = "default") -> None:
    """Raise a ValueError naming the config key for an unknown precision or compile mode."""
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision must be one of {PRECISIONS}, got {precision!r}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"model.compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")


def speed_up(
    denoiser: nn.Module,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
    compile_backend: str = "inductor",
) -> nn.Module:
    """The denoiser with the speed switches; the denoiser itself when none is set (bit-identical default)."""
    check_speed_options(precision, compile_mode)
    if precision == "fp32" and not channels_last and not compile:
        return denoiser
    return FastDenoiser(denoiser, precision=precision, channels_last=channels_last, compile=compile,
                        compile_mode=compile_mode, compile_backend=compile_backend)  # fmt: skip


SPEED_DEFAULTS = {"precision": "fp32", "channels_last": False, "compile": False, "compile_mode": "default"}


def speed_options(model: Mapping[str, Any]) -> dict[str, Any]:
    """The speed switches of a ``model`` config section (absent keys: :data:`SPEED_DEFAULTS`), checked."""
    opts = {k: model.get(k, v) for k, v in SPEED_DEFAULTS.items()}
    opts = {k: str(v) if isinstance(SPEED_DEFAULTS[k], str) else bool(v) for k, v in opts.items()}
    check_speed_options(opts["precision"], opts["compile_mode"])
    return opts
