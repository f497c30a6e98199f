"""The command-line pipeline on the real MovieLens 100K files.

ECRS_MOVIELENS_DIR names the folder; CI always sets it. The training here is
one short epoch per model: these tests check that every step runs on real
data and reports what it should, not the models' quality.
"""

from __future__ import annotations

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
def evaluation(movielens_data: Path) -> str:
    trained = ecrs(
        "train",
        "--data",
        "data",
        "--out",
        "checkpoint",
        "--epochs",
        "1",
        "--ranker-epochs",
        "1",
        "--dim",
        "16",
        cwd=movielens_data,
    )
    assert trained.returncode == 0, trained.stderr
    result = ecrs(
        "evaluate", "--data", "data", "--checkpoint", "checkpoint", cwd=movielens_data
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_evaluate_prints_every_method(evaluation):
    lines = evaluation.splitlines()
    header = lines[0].split()
    assert "recall@50" in header
    assert "ndcg@10" in header
    rows = {
        line.rsplit(maxsplit=len(header) - 1)[0].strip(): line for line in lines[2:5]
    }
    assert set(rows) == {"popularity", "two-tower recall", "two-tower + DeepFM"}
    assert "DeepFM AUC" in evaluation
    assert "943 users, 20000 held-out interactions" in evaluation


def test_popularity_baseline_matches_reference(evaluation):
    """Popularity needs no training, so its figures are fixed by the split.

    The reference values were computed independently on the same protocol.
    """
    popularity = next(
        line for line in evaluation.splitlines() if line.startswith("popularity")
    )
    values = [float(value) for value in popularity.split()[1:]]
    recall_at_50, ndcg_at_10 = values[1], values[3]
    assert recall_at_50 == pytest.approx(0.196, abs=0.01)
    assert ndcg_at_10 == pytest.approx(0.113, abs=0.01)


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
