"""SIGTERM reaches the ecrs command's Python handler after Paddle is imported."""

from __future__ import annotations

import subprocess
import sys

# Importing Paddle installs C++ signal handlers that print a C++ traceback
# and abort. Every ECRS module using Paddle imports ecrs.paddle_runtime,
# which must put the command's handler back.
SCRIPT = """
import os, signal, sys, time

class Stop(Exception):
    pass

def stop(signum, frame):
    raise Stop

signal.signal(signal.SIGTERM, stop)
import {module}  # the process's first import of Paddle
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
except Stop:
    print("unwound")
    sys.exit(0)
sys.exit(3)
"""


def run_script(module: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(module=module)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sigterm_after_importing_paddle_unwinds_the_command():
    done = run_script("ecrs.models.layers")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unwound" in done.stdout
    assert "FatalError" not in done.stderr


def test_paddle_alone_takes_sigterm_over():
    """The reason for ecrs.paddle_runtime. If this fails, Paddle no longer
    takes SIGTERM over, and the module can go."""
    done = run_script("paddle")
    assert done.returncode != 0
    assert "unwound" not in done.stdout


HANGUP_SCRIPT = """
import os, signal, sys, time
from ecrs.cli import Terminated, handle_termination
handle_termination()
try:
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(30)
except Terminated as exc:
    assert exc.signum == signal.SIGHUP, exc.signum
    # A second signal while servers stop must not cut the stopping short.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    print("stopping servers undisturbed")
    sys.exit(0)
sys.exit(3)
"""


def test_hangup_unwinds_and_ignores_a_second_signal():
    done = subprocess.run(
        [sys.executable, "-c", HANGUP_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopping servers undisturbed" in done.stdout
