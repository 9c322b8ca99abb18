"""``python -m ccdf.checkpoints PATH``: what a checkpoint file holds and how to use it (the command-line entry point).

Prints the container and layout, the network family, tensor and parameter counts, the key
fingerprint (docs/reference/CHECKPOINTS.md convention: sha256 over the sorted ``"key shape"`` rows, first
16 hex digits, over our key names; the fingerprint of the file's own names is printed too), the
matching preset and config, and the ``python run.py`` command that loads it (the file's absolute path,
quoted for the shell and for Hydra where needed: it runs as printed). The file is read with
``torch.load(weights_only=True)`` or safetensors: nothing in it is executed.

This module is the only one of :mod:`ccdf.checkpoints` that writes command lines: the library hands it
``run.py`` overrides as data (:attr:`CheckpointInfo.run`), quoted and joined here.

Exit status: 0 when the file was read, 1 when it cannot be read (missing, truncated, corrupt,
unsafe pickle, unknown layout), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Sequence

from ccdf.checkpoints import FAMILIES, PRESETS, CheckpointError, CheckpointInfo, describe_checkpoint
from ccdf.checkpoints.presets import command_hint

__all__ = ["command_value", "format_info", "main"]


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_/+.@%*?|:-]+")
_HYDRA_NOT_STRING = re.compile(r"[-+]?[0-9_.]+([eE][-+]?[0-9]+)?|true|false|null|nan|inf", re.IGNORECASE)
_SHELL_PLAIN = re.compile(r"[A-Za-z0-9_/+.@%:,=-]+")


def command_value(value: str) -> str:
    """``value`` (a file path) written so that ``key=<result>`` on a shell command line reaches Hydra as ``value``.

    Hydra's override grammar needs quotes around spaces, commas, brackets, ``=`` and the like (inside them
    ``'`` and trailing backslashes are escaped) and OmegaConf needs ``${`` escaped; the shell then needs
    quotes around the Hydra quotes.

    >>> command_value("/data/ckpt/ffhq_10m.pt")
    '/data/ckpt/ffhq_10m.pt'
    >>> print(command_value("/my ckpts, v1/w.pt"))
    "'/my ckpts, v1/w.pt'"
    """
    if not _HYDRA_PLAIN.fullmatch(value) or value.startswith("-") or _HYDRA_NOT_STRING.fullmatch(value):
        body = value.replace("${", "\\${")
        body = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, body).replace("'", "\\'")
        value = f"'{body}'"
    if _SHELL_PLAIN.fullmatch(value):
        return value
    if not re.search(r'["$`\\!]', value):
        return f'"{value}"'
    return shlex.quote(value)


def format_info(info: CheckpointInfo) -> str:
    """The report printed for one file."""
    ext = info.extracted
    lines = [
        f"file:        {info.path} ({info.size_bytes / 2**20:.1f} MiB, {info.container})",
        f"layout:      {', '.join(ext.layout)} -- {ext.layout_description}",
    ]
    lines += [f"             {note}" for note in ext.notes]
    lines += [
        f"family:      {ext.family or 'unknown'}",
        f"tensors:     {info.num_tensors}",
        f"parameters:  {info.num_params:,} (numel of all tensors)",
        f"fingerprint: {info.fingerprint} (ccdf key names)",
        f"file keys:   {ext.file_fingerprint}"
        + (
            f" = official {info.official}"
            if info.official
            else " (not an official layout in docs/reference/CHECKPOINTS.md)"
        ),
    ]
    if info.presets:
        p = PRESETS[info.presets[0]]
        lines.append(f"preset:      {' = '.join(info.presets)} (official files: {', '.join(p.files) or 'none'})")
        lines.append(f"published:   {p.published}")
    else:
        lines.append("preset:      none matches")
    if info.config is not None:
        source = (
            "from the file's metadata" if "ccdf.config" in ext.metadata else "preset" if info.presets else "inferred"
        )
        lines.append(f"config:      {json.dumps(info.config, sort_keys=True)} ({source})")
    shown = command_value(str(info.path.absolute()))  # the command works from any folder
    commands = [command_hint(run, shown) for run in info.run]
    if commands:
        lines.append("load with:   " + commands[0])
        lines += [f"             {c}" for c in commands[1:]]
    elif ext.family is not None:
        lines.append(
            "load with:   no run.py task fits this configuration; in Python: "
            f"ccdf.checkpoints.load_net(PATH, family={ext.family!r}, config={{...}})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Inspect each file given; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ccdf.checkpoints", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint file(s)")
    parser.add_argument("--family", choices=sorted(FAMILIES), help="network family (default: detected)")
    parser.add_argument("--no-ema", action="store_true", help="describe the raw weights, not the EMA ones")
    args = parser.parse_args(argv)
    status = 0
    for i, path in enumerate(args.paths):
        if i:
            print()
        try:
            info = describe_checkpoint(path, family=args.family, use_ema=not args.no_ema)
        except (CheckpointError, FileNotFoundError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        print(format_info(info))
    return status
