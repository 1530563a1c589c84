"""Clean shutdown on SIGINT / SIGTERM for the detector node (plain Python, no rclpy).

rclpy's own handler shuts the context down from inside the signal, while the inference thread
may still be publishing ("publisher's context is invalid", "Failed to publish log message to
rosout"), and a second SIGINT (a terminal's Ctrl-C reaches the node *and* ``ros2 launch``,
which forwards one more) raises ``KeyboardInterrupt`` in the middle of the teardown. So the
node runs with rclpy's handlers off (``SignalHandlerOptions.NO``) and :class:`ShutdownSignals`
instead: the first SIGINT or SIGTERM only records the request and sets both signals to
``SIG_IGN``, so every later one is ignored by the kernel, also while the interpreter finalizes
(Python puts ``SIG_DFL`` back for signals that have a Python handler at exit, and a
forwarded SIGINT landing then would kill the process with -2). The main loop, which polls
:attr:`ShutdownSignals.requested`, tears down in order (stop the inference thread, close the
engine, destroy the node, then shut the context down).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ['ShutdownSignals']

_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownSignals:
    """Turn the first of ``signals`` into a request flag and ignore the rest.

    Args:
        signals: the signals to handle (SIGINT and SIGTERM).
        on_request: called (in the main thread, from the handler) on the first signal, e.g.
            to wake an executor; its exceptions are swallowed.
    """

    def __init__(self, signals: Iterable[int] = _DEFAULT_SIGNALS,
                 on_request: Callable[[], Any] | None = None) -> None:
        """Create the handler (not installed yet)."""
        self.signals = tuple(signals)
        self.on_request = on_request
        self.received: int | None = None
        """The first signal received, or None."""
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a shutdown was requested (by a signal or :meth:`request`)."""
        return self._event.is_set()

    def request(self) -> None:
        """Request a shutdown without a signal."""
        self._event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a request; True when one was made."""
        return self._event.wait(timeout)

    def install(self) -> ShutdownSignals:
        """Install the handlers; only possible in the main thread (elsewhere nothing is
        installed and :meth:`request` is the only way). Returns self."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def ignore(self) -> None:
        """Ignore the signals from now on (``SIG_IGN``: until the process exits); main thread
        only, elsewhere a no-op."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            previous = signal.signal(signum, signal.SIG_IGN)
            self._previous.setdefault(signum, previous)

    def restore(self) -> None:
        """Put the previous handlers back (tests; the node keeps ignoring until it exits)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.ignore()
        if self._event.is_set():
            return
        self.received = signum
        self._event.set()
        if self.on_request is not None:
            try:
                self.on_request()
            except Exception:
                pass
