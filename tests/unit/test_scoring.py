"""The blend of the ranker's probability with the recall similarity."""

import numpy as np

from ecrs.serving.scoring import Scoring


def test_blend_is_logit_plus_weighted_similarity():
    scores = Scoring(recall_weight=20.0).blend(
        np.array([0.5, 0.8]), np.array([0.1, -0.05])
    )
    np.testing.assert_allclose(scores, [2.0, np.log(4.0) - 1.0], atol=1e-6)
    assert scores.dtype == np.float32


def test_blend_clips_certain_probabilities_to_finite_scores():
    scores = Scoring().blend(np.array([0.0, 1.0]), np.zeros(2))
    assert np.all(np.isfinite(scores))
    assert scores[0] < scores[1]


def test_scoring_round_trip_and_default(tmp_path):
    assert Scoring.load(tmp_path) == Scoring(recall_weight=0.0)
    Scoring(recall_weight=12.5).save(tmp_path)
    assert Scoring.load(tmp_path).recall_weight == 12.5
