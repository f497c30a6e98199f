"""What ``ecrs stack status`` shows for a state folder and the stacks below it."""

from __future__ import annotations

import os

from ecrs.stack.runfile import ServerRecord, write_records
from ecrs.stack.running import format_status


def record(name: str, pid: int, folder) -> ServerRecord:
    return ServerRecord(
        name=name,
        pid=pid,
        start_time=None,
        host="127.0.0.1",
        ports={"port": 6379},
        command=[name],
        log_path=str(folder / "logs" / f"{name}.log"),
    )


def test_running_stack_in_a_sub_folder_is_shown(tmp_path):
    """The fault suite runs its own stack in <state-dir>/faults; status must
    show it, or its servers are left running unseen."""
    suite = tmp_path / "faults"
    write_records(suite, {"redis": record("redis", os.getpid(), suite)})
    text = format_status(tmp_path)
    assert text.startswith(f"no servers recorded in {tmp_path}")
    assert f"stack in {suite} (stop it with" in text
    assert f"pid {os.getpid()}" in text


def test_benchmark_stack_three_levels_down_is_shown(tmp_path):
    bench = tmp_path / "benchmark" / "items-10000" / "stack"
    write_records(bench, {"triton": record("triton", os.getpid(), bench)})
    deeper = tmp_path / "a" / "b" / "c" / "d"
    write_records(deeper, {"redis": record("redis", os.getpid(), deeper)})
    text = format_status(tmp_path)
    assert f"stack in {bench} (stop it with" in text
    assert str(deeper) not in text


def test_corrupt_sub_folder_run_file_is_reported(tmp_path):
    write_records(tmp_path, {"redis": record("redis", os.getpid(), tmp_path)})
    broken = tmp_path / "faults"
    (broken / "run").mkdir(parents=True)
    (broken / "run" / "stack.json").write_text("{not json")
    text = format_status(tmp_path)
    assert text.startswith("redis   running")
    assert f"stack in {broken}: run file" in text


def test_stopped_sub_folder_stack_is_left_out(tmp_path):
    write_records(tmp_path, {"redis": record("redis", os.getpid(), tmp_path)})
    gone = tmp_path / "benchmark" / "10000"
    # A pid above the kernel's pid limit names no process.
    write_records(gone, {"milvus": record("milvus", 2**22 + 1, gone)})
    text = format_status(tmp_path)
    assert text.startswith("redis   running")
    assert "stack in" not in text
