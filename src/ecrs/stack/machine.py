"""The machine a run used and the versions of its servers and libraries,
for the benchmark's and the fault suite's reports."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from collections.abc import Mapping
from typing import Any

from ecrs.errors import EcrsError
from ecrs.stack.redis_server import find_redis_server


def describe_machine() -> dict[str, Any]:
    """Describe the machine and the versions of the servers and libraries."""
    versions = {}
    for package in ("nvidia-pytriton", "milvus", "pymilvus", "redis", "onnxruntime",
                    "tritonclient", "numpy"):  # fmt: skip
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
        "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0)",
        "redis_server": redis_server_version(),
        "milvus_server": "2.3.5 standalone",
        "versions": versions,
    }


def redis_server_version() -> str:
    try:
        output = subprocess.run(
            [str(find_redis_server()), "--version"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (EcrsError, OSError, subprocess.TimeoutExpired):
        return "unknown"
    for part in output.split():
        if part.startswith("v="):
            return part[2:]
    return output.strip() or "unknown"


def cpu_model() -> str:
    """Return the CPU's model name, or the platform's processor name where
    /proc/cpuinfo has none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_machine(machine: Mapping[str, Any]) -> str:
    """Format ``describe_machine``'s result as a Markdown list."""
    lines = [
        f"- CPU: {machine['cpu']}, {machine['cores']} cores",
        f"- system: {machine['system']}, Python {machine['python']}",
        f"- tritonserver {machine['tritonserver']}, Milvus {machine['milvus_server']}, "
        f"Redis {machine['redis_server']}",
    ]
    packages = ", ".join(
        f"{name} {version}" for name, version in machine["versions"].items()
    )
    lines.append(f"- Python packages: {packages}")
    return "\n".join(lines) + "\n"
