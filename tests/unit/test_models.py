import numpy as np
import paddle
import pytest

from ecrs.models.deepfm import DeepFM, DeepFMConfig
from ecrs.models.layers import FieldEmbedding
from ecrs.models.two_tower import Tower, TwoTower, tower_config


def ids(rows):
    return paddle.to_tensor(np.asarray(rows, dtype=np.int64))


def test_field_embedding_averages_filled_slots_only():
    paddle.seed(0)
    layer = FieldEmbedding([5, 6], [1, 3], dim=4)
    output = layer(ids([[2, 3, 4, 0]])).numpy()
    table = layer.tables[1].weight.numpy()
    assert output.shape == (1, 2, 4)
    np.testing.assert_allclose(output[0, 1], (table[3] + table[4]) / 2, rtol=1e-6)


def test_field_embedding_missing_value_is_zero_vector():
    layer = FieldEmbedding([5, 6], [1, 3], dim=4)
    output = layer(ids([[0, 0, 0, 0]])).numpy()
    assert np.all(output == 0)


def test_field_embedding_rejects_mismatched_layout():
    with pytest.raises(ValueError, match="3 field sizes but 2 slot counts"):
        FieldEmbedding([5, 6, 7], [1, 1], dim=4)


def test_tower_outputs_unit_vectors():
    tower = Tower(
        tower_config([10, 5, 7], [1, 1, 3], embedding_dim=8, hidden=[16], output_dim=6)
    )
    output = tower(ids([[2, 3, 4, 5, 0], [1, 0, 0, 0, 0]])).numpy()
    assert output.shape == (2, 6)
    np.testing.assert_allclose(np.linalg.norm(output, axis=1), 1.0, rtol=1e-5)


def test_two_tower_rejects_different_output_dims():
    user = tower_config([4], [1], embedding_dim=4, hidden=[], output_dim=8)
    item = tower_config([4], [1], embedding_dim=4, hidden=[], output_dim=16)
    with pytest.raises(ValueError, match="output_dim 8 differs"):
        TwoTower(user, item)


def test_deepfm_outputs_probabilities_per_pair():
    model = DeepFM(
        DeepFMConfig(
            user_field_sizes=(10, 5),
            user_field_slots=(1, 1),
            item_field_sizes=(10, 7),
            item_field_slots=(1, 3),
        )
    )
    model.eval()
    scores = model(
        ids([[2, 3], [1, 1], [0, 0]]), ids([[2, 3, 4, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    )
    values = scores.numpy()
    assert values.shape == (3, 1)
    assert np.all((values > 0) & (values < 1))
