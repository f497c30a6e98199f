"""Run perf_analyzer against a model over gRPC and read its CSV report.

perf_analyzer comes with the ``tritonclient`` 2.51 wheel (``bin/perf_analyzer``
beside the interpreter). It links ``libcudart.so.12`` even on CPU, which the
``nvidia-cuda-runtime-cu12`` package provides, so that package's library
folder goes on ``LD_LIBRARY_PATH``. Each concurrency runs as its own
perf_analyzer call, so a sweep can step by any values (perf_analyzer's own
``--concurrency-range`` only steps linearly).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ecrs.benchmark.measures import LatencySummary
from ecrs.errors import StackError

logger = logging.getLogger(__name__)

# perf_analyzer reports these CSV columns in microseconds.
P50, P90, P99 = "p50 latency", "p90 latency", "p99 latency"
THROUGHPUT = "Inferences/Second"
SERVER_COLUMNS = (
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
)
# The client's count of measured requests in perf_analyzer's console output.
REQUEST_COUNT = re.compile(r"Client:\s*\n\s*Request count: (\d+)")
# perf_analyzer's message when no windows agree, and a stability setting
# (percent) that any windows meet.
UNSTABLE = "Failed to obtain stable measurement"
ANY_WINDOWS = 1000
# Seconds perf_analyzer may run beyond its measurement windows (start-up,
# warm-up, unstable windows) before it is stopped.
TIMEOUT_MARGIN_S = 120


@dataclass(frozen=True, kw_only=True)
class PerfSettings:
    """How perf_analyzer measures one concurrency.

    ``measurement_ms`` is the length of one measurement window. perf_analyzer
    repeats windows, up to ``max_trials``, until three in a row agree within
    ``stability_percent`` on throughput and latency, and reports those three.
    """

    measurement_ms: int = 5000
    max_trials: int = 10
    stability_percent: int = 10


@dataclass(frozen=True)
class PerfResult:
    """perf_analyzer's figures at one concurrency, with the server's breakdown
    of its average latency in microseconds.

    ``stable`` is False when no three windows agreed within the stability
    setting, and the figures are those of the last three windows.
    """

    concurrency: int
    latency: LatencySummary
    server_us: dict[str, float]
    stable: bool = True


def perf_analyzer_path() -> Path:
    """Return the perf_analyzer binary installed beside this interpreter."""
    path = Path(sys.executable).parent / "perf_analyzer"
    if not path.is_file():
        raise StackError(
            f"perf_analyzer not found at {path}; install it with "
            "pip install 'tritonclient[all]==2.51.0'"
        )
    return path


def perf_analyzer_env() -> dict[str, str]:
    """Return an environment in which perf_analyzer finds ``libcudart.so.12``."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise StackError(
            "perf_analyzer needs libcudart.so.12, but nvidia-cuda-runtime-cu12 is "
            "not installed; pip install nvidia-cuda-runtime-cu12"
        )
    library = Path(list(spec.submodule_search_locations)[0]) / "lib"
    paths = [str(library), os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}


def perf_command(
    *,
    model: str,
    url: str,
    input_data: Path,
    concurrency: int,
    csv_path: Path,
    settings: PerfSettings,
) -> list[str]:
    return [
        str(perf_analyzer_path()),
        "-m", model,
        "-u", url,
        "-i", "grpc",
        "--input-data", str(input_data),
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--measurement-interval", str(settings.measurement_ms),
        "--max-trials", str(settings.max_trials),
        "-s", str(settings.stability_percent),
        "-f", str(csv_path),
    ]  # fmt: skip


def run_perf_analyzer(
    *,
    model: str,
    url: str,
    input_data: Path,
    concurrency: int,
    work_dir: Path,
    settings: PerfSettings,
) -> PerfResult:
    """Measure ``model`` at one concurrency; raise ``StackError`` if it fails.

    On a busy machine perf_analyzer may find no three windows that agree.
    It is then run again with any three windows accepted, and the result is
    marked unstable.
    """
    try:
        return _run_once(
            model=model, url=url, input_data=input_data, concurrency=concurrency,
            work_dir=work_dir, settings=settings,
        )  # fmt: skip
    except UnstableError:
        logger.warning(
            "perf_analyzer found no stable windows at concurrency %d; "
            "measuring again and accepting any three windows",
            concurrency,
        )
    loose = replace(settings, stability_percent=ANY_WINDOWS)
    result = _run_once(
        model=model, url=url, input_data=input_data, concurrency=concurrency,
        work_dir=work_dir, settings=loose,
    )  # fmt: skip
    return replace(result, stable=False)


class UnstableError(StackError):
    """perf_analyzer found no measurement windows that agree."""


def _run_once(
    *,
    model: str,
    url: str,
    input_data: Path,
    concurrency: int,
    work_dir: Path,
    settings: PerfSettings,
) -> PerfResult:
    csv_path = work_dir / f"perf-c{concurrency}.csv"
    csv_path.unlink(missing_ok=True)
    command = perf_command(
        model=model,
        url=url,
        input_data=input_data,
        concurrency=concurrency,
        csv_path=csv_path,
        settings=settings,
    )
    timeout = settings.measurement_ms / 1000 * settings.max_trials + TIMEOUT_MARGIN_S
    try:
        completed = subprocess.run(
            command,
            env=perf_analyzer_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"perf_analyzer did not finish within {timeout:.0f} s at concurrency "
            f"{concurrency} against {url}"
        ) from exc
    if completed.returncode != 0 or not csv_path.exists():
        output = (completed.stdout + completed.stderr).strip().splitlines()
        error = UnstableError if UNSTABLE in completed.stdout + completed.stderr else StackError
        raise error(
            f"perf_analyzer failed at concurrency {concurrency} against {url} "
            f"(exit status {completed.returncode}): "
            + " | ".join(output[-8:])
        )
    result = parse_perf_csv(csv_path.read_text(encoding="utf-8"))[0]
    count = request_count(completed.stdout)
    return replace(result, latency=replace(result.latency, requests=count))


def request_count(output: str) -> int:
    """Return the client's request count from perf_analyzer's console output,
    0 when it is missing."""
    match = REQUEST_COUNT.search(output)
    return int(match.group(1)) if match else 0


def parse_perf_csv(text: str) -> list[PerfResult]:
    """Parse perf_analyzer's ``-f`` CSV report: one result per concurrency row.

    The report gives throughput in inferences per second and latencies in
    microseconds, and the results hold milliseconds. The CSV has no request
    count, so ``requests`` is 0 (``request_count`` reads it from the console
    output).
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("perf_analyzer's CSV report has no rows")
    return [_perf_row(row) for row in rows]


def _perf_row(row: Mapping[str, str]) -> PerfResult:
    missing = [
        name
        for name in ("Concurrency", THROUGHPUT, P50, P90, P99)
        if not row.get(name)
    ]
    if missing:
        raise ValueError(
            f"perf_analyzer's CSV report lacks the columns {missing}; "
            f"it has {sorted(row)}"
        )
    latency = LatencySummary(
        requests=0,
        throughput=float(row[THROUGHPUT]),
        p50_ms=float(row[P50]) / 1000.0,
        p90_ms=float(row[P90]) / 1000.0,
        p99_ms=float(row[P99]) / 1000.0,
    )
    server = {name: float(row[name]) for name in SERVER_COLUMNS if row.get(name)}
    return PerfResult(int(row["Concurrency"]), latency, server)
