"""Reading the composed config, shared by the pipelines: typed values whose errors name the config key,
required and non-finite values anywhere, and Hydra instantiation that names the key of a bad value."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger("ccdf")

Spec = dict[str, Any]  # a resolved config node (plain dict) with a ``_target_``: what ``instantiate_node`` builds


def instantiate_node(node: Mapping[str, Any], what: str, key: str | None = None, **kwargs: Any) -> Any:
    """``instantiate(node)``. A ``ValueError``/``TypeError`` of the target whose message starts with one of
    the node's keys is re-raised naming the config key: ``center_fraction must be in [0, 1)`` from
    ``cfg.operator`` becomes ``operator.center_fraction must be in [0, 1)``."""
    target = node.get("_target_", "?") if isinstance(node, Mapping | DictConfig) else "?"
    try:
        obj = instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        first = str(cause).split(" ", 1)[0].rstrip(":") if cause is not None else ""
        keyed = isinstance(node, Mapping | DictConfig) and first in node
        if key and isinstance(cause, ValueError | TypeError) and keyed:
            raise ValueError(f"{key}.{cause}") from cause
        raise
    log.info("%s: %s", what, target)
    return obj


def resolved(node: Any) -> Any:
    """A config node as plain Python values, every interpolation resolved (the settings' form of a node)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def task_name() -> str:
    """The chosen ``task`` option (``custom`` when none, or outside a Hydra run)."""
    return str(HydraConfig.get().runtime.choices.get("task", "custom")) if HydraConfig.initialized() else "custom"


def sampler_name() -> str:
    """The chosen ``sampler`` option (``?`` outside a Hydra run), for error messages."""
    return str(HydraConfig.get().runtime.choices.get("sampler", "?")) if HydraConfig.initialized() else "?"


def logger_specs(cfg: DictConfig) -> dict[str, Spec]:
    """The ``logger`` group's targets, resolved (empty when ``logger=null``)."""
    node = cfg.get("logger")
    if not node:
        return {}
    return {str(name): resolved(conf) for name, conf in node.items() if conf and "_target_" in conf}


def build_loggers(specs: Mapping[str, Spec]) -> list[Any]:
    """Lightning loggers from :func:`logger_specs`."""
    return [instantiate_node(spec, f"logger {name}") for name, spec in specs.items()]


def missing_values(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of required values (``???``) that are still unset, Hydra's own node excluded."""
    out: list[str] = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        if OmegaConf.is_missing(node, key):
            out.append(name)
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            out += missing_values(node[key], f"{name}.")
    return out


def non_finite_values(node: DictConfig | ListConfig, prefix: str = "") -> list[tuple[str, float]]:
    """Dotted keys whose (resolved) value is a NaN or infinite float, Hydra's own node excluded.

    Values that are missing or do not resolve are left to the other checks.
    """
    out: list[tuple[str, float]] = []
    keys = range(len(node)) if isinstance(node, ListConfig) else node.keys()
    for key in keys:
        name = f"{prefix}{key}"
        if name == "hydra":
            continue
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - missing (???) or unresolvable here: reported elsewhere
            continue
        if isinstance(value, DictConfig | ListConfig):
            out += non_finite_values(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            out.append((name, value))
    return out


def check_common(cfg: DictConfig, may_be_missing: tuple[str, ...] | None = ()) -> None:
    """What every mode needs: no required value unset (except ``may_be_missing``; ``None``: any may be),
    a known ``mode``, an integer ``seed`` and no NaN or infinite number anywhere."""
    from ccdf.pipelines import MODES

    missing = [] if may_be_missing is None else [k for k in missing_values(cfg) if k not in may_be_missing]
    if missing:
        raise ValueError(f"missing required value(s): {', '.join(missing)}; set them on the command line, "
                         f"e.g. {missing[0]}=...")  # fmt: skip
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose one of {MODES}")
    config_int(cfg, "seed")
    bad = non_finite_values(cfg)
    if bad:
        listing = ", ".join(f"{key}={value}" for key, value in bad)
        raise ValueError(f"non-finite config value(s): {listing}; every number must be finite")


def config_int(cfg: DictConfig, key: str, minimum: int | None = None) -> int:
    """The integer at ``key`` (an integral float such as 2.0 is accepted), else an error naming the key."""
    value = OmegaConf.select(cfg, key)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    return value


def config_float(cfg: DictConfig, key: str, *, low: float | None = None, high: float | None = None,
                 high_open: bool = False) -> float:  # fmt: skip
    """The finite number at ``key`` in ``[low, high]`` (``[low, high)`` with ``high_open``), else an error
    naming the key."""
    value = OmegaConf.select(cfg, key)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and (number >= high if high_open else number > high)):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{key} must be in [{lo}, {hi}{')' if high_open or high is None else ']'}, got {value!r}")
    return number
