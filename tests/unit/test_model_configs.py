"""Every config.pbtxt of the source model_repository/ against the ONNX files
that export writes: model names, backends, tensor names, data types and dims.

The container (NGC image, native ONNX Runtime backend) and the local stack
serve the same configs, so a mismatch here fails in both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
import pytest
from ecrs.export.repository import export_checkpoint, source_repository
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ecrs.serving import triton_model
from ecrs.serving.layout import CONFIG_FILE, ONNX_MODELS, PYTHON_MODELS, RECOMMEND
from ecrs.serving.requests import INPUT_NAMES
from ecrs.serving.triton_model import CAPABILITIES
from ecrs.training.checkpoint import Checkpoint

SOURCE = source_repository()
ONNX_TO_TRITON = {
    onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
    onnx.TensorProto.INT32: model_config_pb2.TYPE_INT32,
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
}


def read_config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(
        (folder / CONFIG_FILE).read_text(encoding="utf-8"),
        model_config_pb2.ModelConfig(),
    )


def onnx_tensors(tensors) -> list[tuple[str, int, list]]:
    """Name, element type and dims (symbolic dims as None) of graph tensors."""
    described = []
    for tensor in tensors:
        shape = tensor.type.tensor_type.shape.dim
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in shape]
        described.append((tensor.name, tensor.type.tensor_type.elem_type, dims))
    return described


def graph(exported, model: str) -> onnx.GraphProto:
    return onnx.load(str(exported.repository / model / "1" / "model.onnx")).graph


def test_source_has_one_folder_per_model():
    folders = {path.name for path in SOURCE.iterdir() if (path / CONFIG_FILE).exists()}
    assert folders == {*ONNX_MODELS, *PYTHON_MODELS}


@pytest.mark.parametrize("model", [*ONNX_MODELS, *PYTHON_MODELS])
def test_config_name_matches_folder(model):
    assert read_config(SOURCE / model).name == model


@pytest.mark.parametrize("model", ONNX_MODELS)
def test_onnx_config_backend_and_batching(model):
    config = read_config(SOURCE / model)
    assert config.backend == "onnxruntime"
    assert config.max_batch_size > 0
    assert config.HasField("dynamic_batching")


@pytest.mark.parametrize("model", ONNX_MODELS)
def test_source_config_matches_onnx_graph(exported, model):
    config = read_config(SOURCE / model)
    onnx_graph = graph(exported, model)
    pairs = [
        (config.input, onnx_tensors(onnx_graph.input)),
        (config.output, onnx_tensors(onnx_graph.output)),
    ]
    for declared, actual in pairs:
        assert [t.name for t in declared] == [name for name, _, _ in actual]
        for tensor, (name, elem_type, dims) in zip(declared, actual):
            assert tensor.data_type == ONNX_TO_TRITON[elem_type], name
            # The batch dimension is dynamic; Triton's dims leave it out.
            assert dims[0] is None, name
            # Source configs mark schema-dependent dims -1; export fills them.
            assert len(tensor.dims) == len(dims) - 1, name
            for declared_dim, actual_dim in zip(tensor.dims, dims[1:]):
                assert declared_dim in (-1, actual_dim), name


@pytest.mark.parametrize("model", ONNX_MODELS)
def test_served_config_dims_equal_onnx(exported, model):
    config = read_config(exported.repository / model)
    onnx_graph = graph(exported, model)
    declared = [*config.input, *config.output]
    actual = onnx_tensors([*onnx_graph.input, *onnx_graph.output])
    for tensor, (name, _, dims) in zip(declared, actual, strict=True):
        assert tensor.name == name
        assert list(tensor.dims) == dims[1:]


@pytest.mark.parametrize("model", PYTHON_MODELS)
def test_python_model_config_matches_its_capability(model):
    """Each Python model declares the tensors its handler reads and returns."""
    config = read_config(SOURCE / model)
    assert config.backend == "python"
    assert config.max_batch_size == 0
    code = (SOURCE / model / "1" / "model.py").read_text(encoding="utf-8")
    assert "ServedPythonModel" in code
    capability = CAPABILITIES[model]
    assert tuple(tensor.name for tensor in config.input) == capability.inputs
    assert tuple(tensor.name for tensor in config.output) == capability.outputs


def string_constants(path: Path) -> set[str]:
    """Return the string literals of a Python file: the tensor names that
    the adapter passes to BLS calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_bls_code_uses_declared_names():
    strings = string_constants(Path(triton_model.__file__).with_name("triton_adapter.py"))
    for model in ONNX_MODELS:
        config = read_config(SOURCE / model)
        for tensor in [*config.input, *config.output]:
            assert tensor.name in strings, f"{model}.{tensor.name}"
    recommend = read_config(SOURCE / RECOMMEND)
    # recommend_ensemble reads its inputs by the names the request parser declares.
    assert {tensor.name for tensor in recommend.input} == set(INPUT_NAMES)


def test_gpu_export_sets_gpu_instances(small_checkpoint, tmp_path):
    served = tmp_path / "served"
    export_checkpoint(Checkpoint.load(small_checkpoint), served, device="gpu")
    gpu = model_config_pb2.ModelInstanceGroup.KIND_GPU
    for model in ONNX_MODELS:
        groups = read_config(served / model).instance_group
        assert [group.kind for group in groups] == [gpu]
    recommend = read_config(served / RECOMMEND).instance_group
    assert recommend[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
