"""The command-line pipeline on the real MovieLens 100K files.

ECRS_MOVIELENS_DIR names the folder; CI always sets it. The training here is
one short epoch per model: these tests check that every step runs on real
data and reports what it should, not the models' quality. The evaluation
runs end to end: baselines, cold start, the report files and the served
path through a private stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ECRS = str(Path(sys.executable).parent / "ecrs")
MOVIELENS = os.environ.get("ECRS_MOVIELENS_DIR")

pytestmark = pytest.mark.skipif(
    not MOVIELENS, reason="set ECRS_MOVIELENS_DIR to a MovieLens 100K folder"
)


# One short epoch per model, small vectors and a short history.
SHORT_TRAINING = (
    "--epochs", "1", "--ranker-epochs", "1", "--dim", "16", "--history", "5"
)  # fmt: skip


def ecrs(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ECRS, *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def movielens_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("movielens")
    result = ecrs(
        "data", "movielens", "--source", MOVIELENS, "--out", "data", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    assert "943 users, 1682 items and 100000 interactions" in result.stdout
    return folder


@pytest.fixture(scope="module")
def evaluation(movielens_data: Path) -> tuple[str, dict]:
    """Train briefly, then evaluate everything, the served path included."""
    trained = ecrs(
        "train", "--data", "data", "--out", "checkpoint", *SHORT_TRAINING,
        cwd=movielens_data,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = ecrs(
        "--state-dir", "state", "evaluate", "--data", "data",
        "--checkpoint", "checkpoint", "--report", "report/quality.md", "--served",
        *SHORT_TRAINING,
        cwd=movielens_data,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((movielens_data / "report" / "quality.json").read_text())
    return result.stdout, report


def test_evaluate_prints_all_tables(evaluation):
    stdout, _ = evaluation
    for method in ("popularity", "item KNN", "EASE", "two-tower recall"):
        assert any(line.startswith(method) for line in stdout.splitlines()), method
    assert "cold-start users (94)" in stdout
    assert "DeepFM AUC" in stdout
    assert "943 users, 20000 held-out interactions" in stdout


def test_report_has_all_metrics(evaluation, movielens_data):
    _, report = evaluation
    methods = report["main"]["methods"]
    assert set(methods) == {
        "popularity", "item KNN", "EASE", "two-tower recall", "two-tower + DeepFM"
    }  # fmt: skip
    for values in methods.values():
        assert set(values) == {
            *(f"{name}@{k}" for name in ("recall", "ndcg") for k in (10, 50, 100)),
            "coverage@10",
        }
    assert report["cold_start_users"] == 94
    cold = report["cold_start"]["methods"]
    assert set(cold) == {"popularity", "two-tower recall", "two-tower + DeepFM"}
    assert report["training"]["cold start"]["two_tower"]["epoch_loss"]
    page = (movielens_data / "report" / "quality.md").read_text()
    assert "## Cold start" in page
    assert "## Served path" in page
    png = movielens_data / "report" / "quality_training.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_baselines_match_the_independent_reference(evaluation):
    """Baselines need no neural training, so the split fixes their figures.

    The references were computed independently on the same protocol; ties in
    time may be ordered differently there, hence the tolerance.
    """
    methods = evaluation[1]["main"]["methods"]
    references = {
        "popularity": (0.196, 0.113),
        "item KNN": (0.319, 0.185),
        "EASE": (0.364, 0.195),
    }
    for method, (recall_at_50, ndcg_at_10) in references.items():
        assert methods[method]["recall@50"] == pytest.approx(recall_at_50, abs=0.01)
        assert methods[method]["ndcg@10"] == pytest.approx(ndcg_at_10, abs=0.01)
    assert evaluation[1]["main"]["ease_l2"] == 300.0


def test_served_path_gives_the_offline_numbers(evaluation):
    served = evaluation[1]["served"]
    assert served["users"] == 943
    assert served["max_difference"] <= served["tolerance"]
    assert served["metrics"]["recall@50"] > 0


def test_bad_rows_fail_the_import_over_the_share(tmp_path):
    source = tmp_path / "ml"
    source.mkdir()
    for name in ("u.user", "u.item", "u.genre"):
        original = Path(MOVIELENS) / name
        if original.exists():
            (source / name).write_bytes(original.read_bytes())
    lines = (Path(MOVIELENS) / "u.data").read_text().splitlines()[:1000]
    lines[10:40] = ["not\ta\tnumber\there"] * 30
    (source / "u.data").write_text("\n".join(lines) + "\n")
    result = ecrs(
        "data", "movielens", "--source", str(source), "--out", "out", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.startswith("ecrs: error: ")
    assert "u.data" in result.stderr
