import pytest

from ecrs.data.schema import DatasetSchema
from ecrs.errors import DataError
from ecrs.features.encoder import FeatureEncoder


def schema(name="shop", user_features=("age", "sex")):
    return DatasetSchema.from_dict(
        {
            "name": name,
            "users": {
                "file": "u.csv",
                "id": "user_id",
                "features": list(user_features),
            },
            "items": {"file": "i.csv", "id": "item_id", "features": ["brand"]},
            "interactions": {"file": "x.csv"},
        }
    )


def encoder():
    return FeatureEncoder.fit(
        schema(), users=[], items=[], trained_user_ids=[], trained_item_ids=[]
    )


def test_same_schema_matches():
    encoder().check_matches(schema())


def test_other_name_is_rejected():
    with pytest.raises(DataError, match="name 'movielens' instead of 'shop'"):
        encoder().check_matches(schema(name="movielens"))


def test_other_features_are_rejected():
    with pytest.raises(DataError, match=r"users features \['age'\] instead of"):
        encoder().check_matches(schema(user_features=("age",)))
