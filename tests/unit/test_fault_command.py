"""The fault suite command's duration option."""

from __future__ import annotations

import argparse

import pytest

from ecrs.errors import ConfigError
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
