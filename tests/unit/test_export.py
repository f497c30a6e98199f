import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ecrs.export import onnx as onnx_export
from ecrs.export.repository import export_checkpoint, onnx_models, source_repository
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ecrs.errors import ExportError
from ecrs.features.encoder import FeatureEncoder
from ecrs.serving.layout import ONNX_MODELS, latest_version, list_versions
from ecrs.serving.onnx_models import OnnxModels
from ecrs.training.checkpoint import Checkpoint


def served_config(folder):
    return text_format.Parse(
        (folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )


def test_export_writes_version_folders(exported):
    for model in ONNX_MODELS:
        folder = exported.repository / model / "1"
        assert (folder / "model.onnx").exists()
        assert (folder / "encoder.json").exists()
    assert (exported.repository / "recommend_ensemble" / "1" / "model.py").exists()
    assert latest_version(exported.repository) == 1


def test_export_parity_within_tolerance(exported):
    assert set(exported.parity) == set(ONNX_MODELS)
    assert all(
        diff <= onnx_export.PARITY_TOLERANCE for diff in exported.parity.values()
    )


def test_onnx_graphs_have_meaningful_tensor_names(exported):
    expected = {
        "user_tower": (["USER_FEATURE_IDS"], ["USER_EMBEDDING"]),
        "item_tower": (["ITEM_FEATURE_IDS"], ["ITEM_EMBEDDING"]),
        "deepfm_rank": (["USER_FEATURE_IDS", "ITEM_FEATURE_IDS"], ["SCORE"]),
    }
    for model, (inputs, outputs) in expected.items():
        graph = onnx.load(str(exported.repository / model / "1" / "model.onnx")).graph
        assert [tensor.name for tensor in graph.input] == inputs
        assert [tensor.name for tensor in graph.output] == outputs


def test_served_configs_match_onnx_files(exported):
    for model in ONNX_MODELS:
        config = served_config(exported.repository / model)
        session = ort.InferenceSession(
            str(exported.repository / model / "1" / "model.onnx")
        )
        assert config.backend == "onnxruntime"
        assert config.max_batch_size > 0
        assert config.HasField("dynamic_batching")
        for declared, actual in zip(config.input, session.get_inputs()):
            assert declared.name == actual.name
            assert list(declared.dims) == list(actual.shape[1:])
            assert declared.data_type == model_config_pb2.TYPE_INT64
        for declared, actual in zip(config.output, session.get_outputs()):
            assert declared.name == actual.name
            assert list(declared.dims) == list(actual.shape[1:])


def test_onnx_models_accept_any_batch_size(exported):
    models = OnnxModels(exported.repository)
    rows = np.zeros((7, models.encoder.users.width), dtype=np.int64)
    assert models.user_tower(rows).shape[0] == 7
    assert models.user_tower(rows[:1]).shape[0] == 1


def test_second_export_adds_version_two(small_checkpoint, tmp_path):
    served = tmp_path / "served"
    checkpoint = Checkpoint.load(small_checkpoint)
    export_checkpoint(checkpoint, served)
    result = export_checkpoint(checkpoint, served)
    assert result.version == 2
    assert list_versions(served, "deepfm_rank") == [1, 2]
    assert (
        FeatureEncoder.load(served / "user_tower" / "2").to_dict()
        == checkpoint.encoder.to_dict()
    )


def test_export_leaves_source_repository_untouched(small_checkpoint, tmp_path):
    source = source_repository()
    before = {path: path.read_bytes() for path in source.rglob("*") if path.is_file()}
    export_checkpoint(Checkpoint.load(small_checkpoint), tmp_path / "served")
    after = {path: path.read_bytes() for path in source.rglob("*") if path.is_file()}
    assert after == before


def test_parity_failure_raises_and_writes_nothing(
    small_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setattr(onnx_export, "PARITY_TOLERANCE", -1.0)
    monkeypatch.setattr(onnx_export.check_parity, "__defaults__", (-1.0,))
    served = tmp_path / "served"
    with pytest.raises(ExportError, match="differs from Paddle's"):
        export_checkpoint(Checkpoint.load(small_checkpoint), served)
    assert list_versions(served, "user_tower") == []


def test_onnx_model_specs_follow_encoder_width(small_checkpoint):
    checkpoint = Checkpoint.load(small_checkpoint)
    specs = {model.name: model for model in onnx_models(checkpoint)}
    assert specs["user_tower"].inputs[0].dims == (checkpoint.encoder.users.width,)
    assert specs["deepfm_rank"].outputs[0].dims == (1,)
