# Triton 24.10 (Triton 2.51, Python 3.10) with ECRS installed, for the served
# models and for the loader service. The native ONNX Runtime backend of this
# image serves the ONNX models, on CPU or, with KIND_GPU configs, on the GPU.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# Only what installing the package needs, so source edits elsewhere in the
# checkout do not invalidate this layer.
COPY pyproject.toml README.md /opt/ecrs/
COPY src /opt/ecrs/src
COPY export /opt/ecrs/export
COPY client /opt/ecrs/client
COPY model_repository /opt/ecrs/model_repository

# numpy 2 breaks the Python backend stub of Triton 2.51 on BYTES inputs, and
# pandas 3 needs numpy 2; pyproject.toml pins both below 2 and 3 as well.
RUN pip install --no-cache-dir "numpy<2" "pandas<3" /opt/ecrs \
    && python3 -c "import numpy, pandas, ecrs.stores.loader; assert numpy.__version__ < '2'"
