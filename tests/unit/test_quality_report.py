"""The quality page, its JSON copy and its plot, from a hand-made run."""

import json

import pytest

from ecrs.errors import ConfigError
from ecrs.evaluation.evaluate import (
    EASE,
    ITEM_KNN,
    POPULARITY,
    TWO_STAGE,
    TWO_TOWER,
    EvaluationReport,
)
from ecrs.evaluation.quality import QualityRun, ServedComparison
from ecrs.evaluation.report import check_report_folder, write_report


def metrics(recall50, ndcg10):
    return {"recall@50": recall50, "ndcg@10": ndcg10, "coverage@10": 0.1}


def quality_run():
    main = EvaluationReport(
        methods={
            POPULARITY: metrics(0.20, 0.11),
            ITEM_KNN: metrics(0.32, 0.19),
            EASE: metrics(0.37, 0.21),
            TWO_TOWER: metrics(0.41, 0.24),
            TWO_STAGE: metrics(0.38, 0.205),
        },
        deepfm_auc=0.8,
        users=3,
        heldout=6,
        ease_l2=300.0,
    )
    cold = EvaluationReport(
        methods={
            POPULARITY: metrics(0.10, 0.05),
            TWO_TOWER: metrics(0.12, 0.06),
            TWO_STAGE: metrics(0.09, 0.04),
        }
    )
    curve = {"seconds": 1.5, "epoch_loss": [2.0, 1.0]}
    return QualityRun(
        settings={"cold_start_share": 0.1},
        dataset={"name": "toy", "users": 3, "items": 4, "interactions": 9},
        main=main,
        training={"main": {"two_tower": curve, "deepfm": curve}},
        cold_start=cold,
        cold_start_users=1,
        served=ServedComparison(
            metrics={"recall@50": 0.381, "ndcg@10": 0.205},
            offline={"recall@50": 0.38, "ndcg@10": 0.205},
            seconds=2.0,
            users=3,
        ),
    )


def test_targets_report_margins():
    targets = {target.name: target for target in quality_run().targets()}
    assert targets["two-tower recall@50 >= 0.33"].met
    assert targets["two-stage NDCG@10 >= 0.20"].met
    # 0.205 is below EASE's 0.21.
    assert not targets["two-stage NDCG@10 above EASE's"].met
    assert not targets["cold-start two-stage recall@50 above popularity's"].met
    assert targets["served metrics within the tolerance of the offline ones"].met


def test_write_report_writes_page_json_and_png(tmp_path):
    page = tmp_path / "docs" / "quality.md"
    paths = write_report(quality_run(), page)
    assert [path.name for path in paths] == [
        "quality.md",
        "quality.json",
        "quality_training.png",
    ]
    text = page.read_text()
    assert "| EASE | 0.3700 | 0.2100 | 0.1000 |" in text
    assert "missed by 0.0050" in text
    assert "| two-stage NDCG@10 >= 0.20 | 0.2050 | 0.2000 | met by 0.0050 |" in text
    assert "Cold start: 10% of the users" in text
    assert "![Training loss per epoch](quality_training.png)" in text
    copy = json.loads((tmp_path / "docs" / "quality.json").read_text())
    assert copy["main"]["methods"][EASE]["ndcg@10"] == 0.21
    assert copy["served"]["max_difference"] == pytest.approx(0.001)
    assert (tmp_path / "docs" / "quality_training.png").read_bytes()[:4] == b"\x89PNG"


def test_report_page_must_be_markdown(tmp_path):
    with pytest.raises(ConfigError, match="quality.txt"):
        write_report(quality_run(), tmp_path / "quality.txt")


def test_targets_not_computed_are_listed_as_not_evaluated(tmp_path):
    run = quality_run()
    run.cold_start = None
    run.served = None
    targets = {target.name: target for target in run.targets()}
    cold = targets["cold-start two-stage recall@50 above popularity's"]
    assert not cold.met
    assert cold.describe() == "not evaluated: the run had --cold-start-share 0"
    served = targets["served metrics within the tolerance of the offline ones"]
    assert served.describe() == "not evaluated: the run had no --served"
    write_report(run, tmp_path / "quality.md")
    text = (tmp_path / "quality.md").read_text()
    assert "|  |  | not evaluated: the run had no --served |" in text
    assert "Cold start:" not in text


def test_report_folder_that_cannot_be_written_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the report"):
        check_report_folder(blocker / "quality.md")
