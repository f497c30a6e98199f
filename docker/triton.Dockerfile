# Triton 24.10 (Triton 2.51, Python 3.10) with the packages the ECRS models
# import. The native ONNX Runtime backend of this image serves the ONNX models;
# the onnxruntime and pyarrow packages are for the loader service, which runs
# the item tower and reads the Parquet data set.
FROM nvcr.io/nvidia/tritonserver:24.10-py3

# numpy 2 breaks the Python backend stub of this release; pymilvus imports
# pandas, and pandas 3 needs numpy 2.
RUN pip install --no-cache-dir "numpy<2" "pandas<3" "pyarrow>=14,<21" "redis>=5" \
    "pymilvus>=2.5,<2.6" "protobuf<5" "onnxruntime>=1.18"

COPY src/ecrs /opt/ecrs/src/ecrs
COPY export /opt/ecrs/src/ecrs/export
COPY client /opt/ecrs/src/ecrs/client
ENV PYTHONPATH=/opt/ecrs/src
