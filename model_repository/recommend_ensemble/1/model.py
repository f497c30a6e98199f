"""recommend_ensemble: two-stage recommendations in one request, through BLS.

The request path lives in ``ecrs.serving``; ``ServedPythonModel`` turns
Triton requests into calls to it.
"""

from ecrs.serving.layout import RECOMMEND
from ecrs.serving.triton_adapter import ServedPythonModel


class TritonPythonModel(ServedPythonModel):
    capability = RECOMMEND
