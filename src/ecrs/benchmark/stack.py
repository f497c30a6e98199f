"""A private stack for one benchmark catalogue: start, load, measure memory, stop.

Each catalogue gets a fresh state folder, free loopback ports, a fresh export
of its checkpoint, and stores loaded with its data. The stack is stopped when
the ``serving_stack`` block ends, whatever happened in it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ecrs.benchmark.catalogue import Catalogue
from ecrs.config import StackConfig
from ecrs.export.repository import export_checkpoint
from ecrs.stack.launcher import stack_status, start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports
from ecrs.stores.loader import LoadResult, load_stores
from ecrs.training.checkpoint import Checkpoint


@dataclass(frozen=True)
class ServingStack:
    """A started and loaded stack, with each server's memory before loading."""

    config: StackConfig
    load: LoadResult
    idle_rss_bytes: dict[str, int]


@contextmanager
def serving_stack(catalogue: Catalogue, state_dir: Path) -> Iterator[ServingStack]:
    """Start a stack in ``state_dir``, load ``catalogue`` and yield it.

    ``state_dir`` starts empty: what an earlier run left there is removed.
    The block starts once the vector index covers every item.
    """
    stop_stack(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    config = StackConfig(state_dir=state_dir, ports=pick_free_ports())
    export_checkpoint(Checkpoint.load(catalogue.checkpoint), config.model_repository)
    start_stack(config)
    try:
        idle = server_rss_bytes(state_dir)
        load = load_stores(
            catalogue.dataset, config.model_repository, config.stores
        )
        yield ServingStack(config, load, idle)
    finally:
        stop_stack(state_dir)


def server_rss_bytes(state_dir: Path) -> dict[str, int]:
    """Return each running server's resident memory, with its child processes.

    Triton's Python models run in child processes (one backend stub per
    model instance), so a server's figure is the sum over its process tree.
    """
    return {
        server.name: sum(process_rss_bytes(pid) for pid in process_tree(server.pid))
        for server in stack_status(state_dir)
        if server.running
    }


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and every process below it, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def process_rss_bytes(pid: int) -> int:
    """Return a process's resident set size (``VmRSS``), 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
