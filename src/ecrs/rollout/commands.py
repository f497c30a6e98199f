"""Handlers of ``ecrs rollout``, ``ecrs promote``, ``ecrs rollback`` and
``ecrs versions`` against the local stack."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.rollout.rollout import (
    RolloutReport,
    RolloutSettings,
    VersionManager,
    run_step,
)
from ecrs.rollout.status import format_statuses, version_statuses
from ecrs.stack import running
from ecrs.training.checkpoint import Checkpoint


def roll_out(args: argparse.Namespace, stack: StackConfig) -> int:
    gate_data = Dataset.load(args.gate_data)
    # A checkpoint that cannot be read fails the export step, by name.
    checkpoint = run_step("export", lambda: Checkpoint.load(args.checkpoint))
    with _manager(args, stack) as manager:
        report = manager.roll_out(checkpoint, gate_data, canary_share=args.canary)
    _print_report(report)
    return 0


def promote(args: argparse.Namespace, stack: StackConfig) -> int:
    with _manager(args, stack) as manager:
        _print_report(manager.promote())
    return 0


def roll_back(args: argparse.Namespace, stack: StackConfig) -> int:
    with _manager(args, stack) as manager:
        _print_report(manager.roll_back(args.to))
    return 0


def show_versions(args: argparse.Namespace, stack: StackConfig) -> int:
    with _manager(args, stack) as manager:
        print(format_statuses(version_statuses(manager)))
    return 0


@contextmanager
def _manager(args: argparse.Namespace, stack: StackConfig) -> Iterator[VersionManager]:
    live = running.running_config(stack.state_dir)
    settings = RolloutSettings(
        margin=getattr(args, "margin", RolloutSettings.margin),
        force=getattr(args, "force", False),
        keep=getattr(args, "keep", RolloutSettings.keep),
        gate_users=getattr(args, "gate_users", RolloutSettings.gate_users),
    )
    manager = VersionManager(
        live.model_repository, live.stores, live.triton_grpc_url, settings
    )
    try:
        yield manager
    finally:
        manager.close()


def _print_report(report: RolloutReport) -> None:
    if report.serving is not None and report.candidate is not None:
        print(f"quality gate: serving {report.serving.describe()}")
        print(f"quality gate: candidate {report.candidate.describe()}")
    pointer = report.pointer
    print(f"version {pointer.version} serves now")
    if pointer.canary_version is not None:
        print(
            f"version {pointer.canary_version} is a canary for "
            f"{pointer.canary_share:.0%} of users; promote it with 'ecrs promote' "
            "or end it with 'ecrs rollback'"
        )
    if report.removed:
        removed = ", ".join(map(str, report.removed))
        print(f"removed the folders and collections of versions: {removed}")
