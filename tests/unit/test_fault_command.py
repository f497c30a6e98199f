"""The fault suite command: its options and how it ends."""

from __future__ import annotations

import argparse

import pytest

from ecrs.config import StackConfig
from ecrs.errors import ConfigError
from ecrs.faults import command
from ecrs.faults.command import check_report_path, failed_checks, parse_duration


def test_duration_units():
    assert parse_duration("30m") == 1800
    assert parse_duration("90s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration("45") == 45


@pytest.mark.parametrize("text", ["abc", "0", "1e-7", "5s", "25h", "1e30"])
def test_duration_out_of_range_is_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError, match="30m"):
        parse_duration(text)


def test_report_path_is_checked_before_the_run(tmp_path):
    check_report_path(tmp_path / "new" / "faults.md")
    assert (tmp_path / "new").is_dir()
    with pytest.raises(ConfigError, match="Markdown"):
        check_report_path(tmp_path / "faults.txt")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        check_report_path(tmp_path / "folder.md")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create its folder"):
        check_report_path(tmp_path / "file" / "faults.md")


def test_summary_says_why_a_window_failed():
    assert failed_checks([]) == ""
    assert failed_checks(["1 differences", "2 errors before the fault"]) == (
        "; FAILED: 1 differences; 2 errors before the fault"
    )


def test_stack_is_stopped_when_loading_is_interrupted(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while the suite loads its stores stops the servers
    it has started."""
    stopped = []

    def interrupted_load(folder, dataset):
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "prepare_dataset", lambda folder: "dataset")
    monkeypatch.setattr(command, "prepare_repository", lambda folder, dataset: None)
    monkeypatch.setattr(command, "start_loaded_stack", interrupted_load)
    monkeypatch.setattr(command, "stop_stack", stopped.append)
    args = argparse.Namespace(short=True, duration=None, concurrency=8, report=None)
    stack = StackConfig(state_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        command.run_faults(args, stack)
    assert stopped == [tmp_path / "faults"]
