"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM (what a cluster scheduler sends at a time limit).

Either signal becomes :class:`Interrupted` in the main thread, and ``ccdf.app.main`` turns that into the
shell's convention for a death by signal: exit status ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
Python's default turns SIGINT into ``KeyboardInterrupt`` and lets SIGTERM kill the process without any
clean-up; Lightning 2.6 only records SIGTERM and, in ``fit``, leaves through ``SIGTERMException``, a
``SystemExit`` with status 0, and in ``predict`` not at all.

Training defers the signal to the end of the current optimisation step (:meth:`SignalGuard.deferred`), so a
checkpoint can be written at a consistent point (:class:`ccdf.lightning.callbacks.StopOnSignal`); everything
else stops at once (all files are written atomically, see :mod:`ccdf.utils.io`). A second signal while a
first one is deferred stops at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("ccdf")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):  # noqa: N818 - named like KeyboardInterrupt, which it generalises
    """The run was stopped by a signal.

    A ``BaseException`` (as ``KeyboardInterrupt``): an ``except Exception`` in a library does not swallow it.

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal_name(self.signum)}")

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM (the shell's status of a process killed by it)."""
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalGuard:
    """Route SIGINT and SIGTERM to :class:`Interrupted` while the ``with`` block runs (main thread only).

    ``received`` holds the first signal's number. Outside :meth:`deferred` a signal raises at once;
    inside, the first one is only recorded (the code raises at its next safe point, see :meth:`check`)
    and a second one raises at once. The previous handlers are restored on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._defer = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
        self.install()
        return self

    def install(self) -> None:
        """(Re-)install the handlers, e.g. over the SIGTERM handler Lightning installs when ``fit`` starts."""
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self._defer and first:
            log.warning("%s received: stopping after the current step (send it again to stop at once)",
                        signal_name(signum))  # fmt: skip
            return
        raise Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[SignalGuard]:
        """Inside the block, record the first signal instead of raising (the code calls :meth:`check`)."""
        self._defer = True
        try:
            yield self
        finally:
            self._defer = False

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal was received."""
        if self.received is not None:
            raise Interrupted(self.received)
