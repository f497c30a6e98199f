"""user_lookup: a known user's stored raw features and recent items.

The logic lives in ``ecrs.serving``; ``ServedPythonModel`` turns Triton
requests into calls to it.
"""

from ecrs.serving.layout import USER_LOOKUP
from ecrs.serving.triton_adapter import ServedPythonModel


class TritonPythonModel(ServedPythonModel):
    capability = USER_LOOKUP
