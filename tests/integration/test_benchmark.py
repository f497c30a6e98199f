"""The benchmark command on a tiny catalogue, and its lever reloads.

The smoke test checks that the command runs end to end and writes a
complete report; it asserts no timings.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from ecrs.benchmark import levers
from ecrs.serving.layout import RECOMMEND
from ecrs.serving.stages import STAGES
from ecrs.stack.launcher import stack_status
from ecrs.stack.running import nested_stacks

pytestmark = pytest.mark.integration

ECRS = str(Path(sys.executable).parent / "ecrs")
ITEMS = 2000


def test_benchmark_command_writes_report(tmp_path):
    page = tmp_path / "docs" / "benchmark.md"
    result = subprocess.run(
        [
            ECRS, "--state-dir", str(tmp_path / "state"), "benchmark",
            "--items", str(ITEMS), "--users", "300", "--interactions", "5000",
            "--dim", "16", "--concurrency", "1,2", "--requests", "50",
            "--measurement-ms", "500", "--reference-seconds", "0.5",
            "--ann-queries", "20", "--report", str(page),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"wrote {page}" in result.stdout
    run = json.loads(page.with_suffix(".json").read_text())
    assert page.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    (size,) = run["sizes"]
    assert size["items"] == ITEMS
    for source in ("triton", "reference"):
        rows = size[source]
        assert [row["concurrency"] for row in rows] == [1, 2]
        for row in rows:
            for name in ("throughput", "p50_ms", "p90_ms", "p99_ms"):
                assert row[name] > 0, (source, row["concurrency"], name)
            assert row["p50_ms"] <= row["p99_ms"]
            assert set(row["stages"]) == set(STAGES), source
            for stage, figures in row["stages"].items():
                assert figures["mean_ms"] > 0, (source, stage)
    index = size["index"]
    assert 0 < index["chosen"]["recall"] <= 1
    assert index["chosen"]["served"]
    assert {m["index_type"] for m in index["measured"]} == {"FLAT", "HNSW", "IVF_FLAT"}
    memory = size["memory"]
    assert set(memory["rss_loaded_bytes"]) == {"redis", "milvus", "triton"}
    assert all(value > 0 for value in memory["rss_loaded_bytes"].values())
    assert memory["redis_bytes_per_item"] > 0
    text = page.read_text()
    assert f"## {ITEMS:,} items" in text
    for stage in STAGES:
        assert f"| {stage} |" in text
    assert run["machine"]["cores"] > 0


def test_lever_reloads_and_restores_config(stack, loaded, client, small_dataset):
    lever = levers.Lever("one instance", {RECOMMEND: levers.set_instances(1)})
    url = stack.triton_grpc_url
    with grpcclient.InferenceServerClient(url) as triton:
        served = triton.get_model_config(RECOMMEND, as_json=True)["config"]
        with levers.applied(url, lever):
            changed = triton.get_model_config(RECOMMEND, as_json=True)["config"]
            user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
            assert len(client.recommend(user_id=user_id, top_n=3)) == 3
        restored = triton.get_model_config(RECOMMEND, as_json=True)["config"]
    assert [group["count"] for group in changed["instance_group"]] == [1]
    assert restored["instance_group"] == served["instance_group"]


def running_servers(state_dir: Path) -> dict[Path, list[str]]:
    """Return the running servers of each stack below ``state_dir``."""
    found = {}
    for folder in nested_stacks(state_dir):
        names = [status.name for status in stack_status(folder) if status.running]
        if names:
            found[folder] = names
    return found


def test_sigterm_stops_the_servers_the_command_started(tmp_path):
    """A benchmark stopped with SIGTERM, as a scheduler or `timeout` stops
    it, stops its private stack as Ctrl-C does. Paddle, imported by the
    command for training, must not replace that handling with its own."""
    state = tmp_path / "state"
    command = subprocess.Popen(
        [
            ECRS, "--state-dir", str(state), "benchmark",
            "--items", str(ITEMS), "--users", "300", "--interactions", "5000",
            "--dim", "16", "--concurrency", "1", "--requests", "50",
            "--measurement-ms", "60000", "--reference-seconds", "60",
            "--ann-queries", "20", "--report", str(tmp_path / "benchmark.md"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 480
        while "triton" not in sum(running_servers(state).values(), []):
            assert command.poll() is None, command.communicate()
            assert time.monotonic() < deadline, "the stack never started"
            time.sleep(1)
        command.send_signal(signal.SIGTERM)
        stdout, stderr = command.communicate(timeout=300)
        assert command.returncode == 128 + signal.SIGTERM, stdout[-2000:] + stderr[-3000:]
        assert "ecrs: stopped by SIGTERM" in stderr
        assert "FatalError" not in stderr
        assert running_servers(state) == {}
    finally:
        if command.poll() is None:
            command.kill()
        for folder in running_servers(state):
            subprocess.run([ECRS, "--state-dir", str(folder), "stack", "stop"], check=False)
