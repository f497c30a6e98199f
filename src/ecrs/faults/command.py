"""The ``ecrs faults`` command: build the suite's stack, run it, report."""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from ecrs.config import StackConfig
from ecrs.errors import ConfigError
from ecrs.faults.run import FULL_PLAN, SHORT_PLAN, SuitePlan, SuiteResult, run_suite
from ecrs.faults.stack import prepare_dataset, prepare_repository, start_loaded_stack
from ecrs.stack.launcher import stop_stack

logger = logging.getLogger(__name__)

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
# A shorter soak has too few memory samples to judge, and a day is far past
# any useful soak (1e30 s overflowed time.sleep after the stack was built).
MIN_DURATION_S = 10.0
MAX_DURATION_S = 86_400.0


def parse_duration(text: str) -> float:
    """Read a duration such as ``30m``, ``90s``, ``1h`` or ``45`` (seconds)."""
    match = DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write a positive number with s, m or h, "
            "such as 30m"
        )
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2) or "s"]
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is outside the soak's range; pass 10s to 24h, such as 30m"
        )
    return seconds


def plan_for(args: argparse.Namespace) -> SuitePlan:
    base = SHORT_PLAN if args.short else FULL_PLAN
    soak_s = args.duration if args.duration is not None else base.soak_s
    return replace(base, soak_s=soak_s, concurrency=args.concurrency)


def check_report_path(page: Path) -> None:
    """Raise ConfigError unless the report can be written at ``page``, before
    the suite spends its half hour."""
    if page.suffix != ".md":
        raise ConfigError(f"--report {page} must name a Markdown (.md) file")
    if page.is_dir():
        raise ConfigError(f"--report {page} is a folder; name a .md file in it")
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--report {page}: cannot create its folder ({exc.strerror}); "
            "pass a path in a writable folder"
        ) from exc
    if not os.access(page.parent, os.W_OK):
        raise ConfigError(
            f"--report {page}: folder {page.parent} is not writable; "
            "pass a path in a writable folder"
        )


def run_faults(args: argparse.Namespace, stack: StackConfig) -> int:
    """Run the fault suite on a private stack in ``<state-dir>/faults``."""
    plan = plan_for(args)
    if args.report is not None:
        check_report_path(args.report)
    folder = stack.state_dir / "faults"
    started = time.monotonic()
    dataset = prepare_dataset(folder)
    prepare_repository(folder, dataset)
    # The stack is stopped however the run ends, loading included: after an
    # error, Ctrl-C or SIGTERM nothing of the suite's keeps running.
    try:
        config = start_loaded_stack(folder, dataset)
        print(f"the suite's stack runs from {folder}; soak {plan.soak_s:.0f} s", flush=True)
        result = run_suite(config, dataset, plan)
    finally:
        stop_stack(folder)
    print(format_summary(result, time.monotonic() - started))
    if args.report is not None:
        from ecrs.faults.report import write_report

        for path in write_report(result, args.report):
            print(f"wrote {path}")
    return 0 if result.passed else 1


def format_summary(result: SuiteResult, seconds: float) -> str:
    soak = result.soak
    lines = [
        (
            f"soak: {soak.requests} requests, {soak.errors} errors, p99 {soak.p99_ms} ms, "
            f"memory {'levels off' if soak.memory_levels_off else 'GROWS'}"
        )
    ]
    for fault in result.faults:
        lines.append(
            f"{fault.name}: {fault.errors} errors ({fault.unexpected_count} unexpected), "
            f"recovered in {fault.recovery_s} s (bound {fault.recovery_bound_s:.0f} s), "
            f"{fault.errors_after_recovery} errors after it{failed_checks(fault.failures)}"
        )
    restart = result.restart
    lines.append(
        f"full restart: stop {restart.stop_s} s, start {restart.start_s} s, "
        f"{len(restart.differences)} differences{failed_checks(restart.failures)}"
    )
    if result.fuzz is not None:
        cases = sum(item.cases for item in result.fuzz.results)
        unexpected = sum(item.unexpected_count for item in result.fuzz.results)
        lines.append(
            f"hostile requests: {cases} over {len(result.fuzz.results)} models, "
            f"{unexpected} unexpected statuses, stubs replaced: "
            f"{result.fuzz.replaced or 'none'}"
        )
    lines.append(
        f"fault suite {'passed' if result.passed else 'FAILED'} in {seconds / 60:.1f} min"
    )
    return "\n".join(lines)


def failed_checks(failures: list[str]) -> str:
    return f"; FAILED: {'; '.join(failures)}" if failures else ""
