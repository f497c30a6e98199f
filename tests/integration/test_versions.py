"""'ecrs export' then 'ecrs load' switch a running server to the new version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from ecrs.data.generate import generate_shop_dataset
from ecrs.data.schema import DatasetSchema
from ecrs.serving.layout import latest_version

pytestmark = pytest.mark.integration

ECRS = str(Path(sys.executable).parent / "ecrs")


def ecrs(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ECRS, "--state-dir", str(stack.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_export_and_load_switch_version(
    stack, loaded, client, small_dataset, small_checkpoint, tmp_path
):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    before = client.recommend(user_id=user_id, top_n=5)
    exported = ecrs(stack, "export", "--checkpoint", str(small_checkpoint))
    assert exported.returncode == 0, exported.stderr
    version = latest_version(stack.model_repository)
    assert version == loaded.version + 1

    data = small_dataset.save(tmp_path / "data")
    result = ecrs(stack, "load", "--data", str(data))
    assert result.returncode == 0, result.stderr
    assert f"for version {version}" in result.stdout
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as triton:
        assert triton.is_model_ready("user_tower", str(version))
        assert triton.is_model_ready("deepfm_rank", str(version))
    # The same checkpoint exported again recommends the same items.
    after = client.recommend(user_id=user_id, top_n=5)
    assert [item.item_id for item in after] == [item.item_id for item in before]


def test_load_rejects_other_data_set(stack, loaded, tmp_path):
    other = generate_shop_dataset(num_users=5, num_items=5, num_interactions=10)
    raw = other.schema.to_dict()
    raw["name"] = "another-shop"
    other.schema = DatasetSchema.from_dict(raw)
    folder = other.save(tmp_path / "other")
    result = ecrs(stack, "load", "--data", str(folder))
    assert result.returncode == 1
    assert "does not match the model version" in result.stderr
