import json

import numpy as np

from ecrs.data.split import temporal_split
from ecrs.features.encoder import OOV_ID
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.data import encode_dataset
from ecrs.training.deepfm import sample_negatives
from ecrs.training.two_tower import item_vectors, user_vectors


def test_checkpoint_round_trip_gives_same_vectors(small_dataset, small_checkpoint):
    checkpoint = Checkpoint.load(small_checkpoint)
    train, _ = temporal_split(small_dataset)
    data = encode_dataset(small_dataset, train, encoder=checkpoint.encoder)
    first = user_vectors(checkpoint.two_tower, data.user_rows[:5])
    again = user_vectors(
        Checkpoint.load(small_checkpoint).two_tower, data.user_rows[:5]
    )
    np.testing.assert_array_equal(first, again)


def test_checkpoint_records_validation_metrics(small_checkpoint):
    metrics = json.loads((small_checkpoint / "metrics.json").read_text())
    assert set(metrics["methods"]) == {
        "popularity",
        "two-tower recall",
        "two-tower + DeepFM",
    }
    assert 0.0 <= metrics["methods"]["two-tower recall"]["recall@50"] <= 1.0
    assert 0.0 <= metrics["deepfm_auc"] <= 1.0


def test_encoder_knows_only_trained_ids(small_dataset, small_checkpoint):
    encoder = Checkpoint.load(small_checkpoint).encoder
    train, _ = temporal_split(small_dataset)
    trained = set(train["user_id"])
    vocabulary = set(encoder.users.fields[0].vocabulary)
    assert vocabulary == trained


def test_unseen_item_gets_a_vector_from_features(small_dataset, small_checkpoint):
    checkpoint = Checkpoint.load(small_checkpoint)
    row = small_dataset.items.iloc[0].to_dict()
    rows = checkpoint.encoder.encode_items(["never-seen-sku"], [row])
    assert rows[0, 0] == OOV_ID
    vector = item_vectors(checkpoint.two_tower, rows)
    assert np.isfinite(vector).all()
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-5)


def test_sample_negatives_stay_in_catalogue():
    rng = np.random.default_rng(0)
    counts = np.array([100, 0, 0, 5])
    drawn = sample_negatives(counts, 10_000, rng)
    assert drawn.min() >= 0
    assert drawn.max() <= 3
    # Popularity sampling makes item 0 more frequent than uniform alone would.
    assert np.mean(drawn == 0) > 0.4
