"""Paddle, imported so that the process keeps its Python signal handlers.

Importing Paddle installs C++ handlers for SIGTERM and the fatal signals:
they print a C++ traceback and end the process at once. ``ecrs`` handles
SIGTERM as it handles Ctrl-C, stopping every server a command started, so
each ECRS module that uses Paddle imports this one: it removes Paddle's
handlers and puts back every Python handler in force.
"""

from __future__ import annotations

import signal
import threading

import paddle

__all__ = ["paddle"]


def keep_python_signal_handlers() -> None:
    """Replace Paddle's C++ signal handlers with every Python handler in force.

    Python can only install handlers from the main thread, so an import
    from another thread leaves Paddle's handlers in place.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    handlers = {signum: signal.getsignal(signum) for signum in signal.valid_signals()}
    paddle.disable_signal_handler()
    for signum, handler in handlers.items():
        if callable(handler):
            signal.signal(signum, handler)


keep_python_signal_handlers()
