"""The local stack: Redis, Milvus standalone and tritonserver, started without Docker.

``ecrs.stack.launcher`` starts, stops and inspects it. This package imports
nothing itself, so that Triton models importing ``ecrs.stack.onnx_batching``
do not load the launcher and its store clients.
"""
