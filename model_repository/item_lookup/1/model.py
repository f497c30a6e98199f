"""item_lookup: the stored details of items by id, and the ids not found.

The logic lives in ``ecrs.serving``; ``ServedPythonModel`` turns Triton
requests into calls to it.
"""

from ecrs.serving.layout import ITEM_LOOKUP
from ecrs.serving.triton_adapter import ServedPythonModel


class TritonPythonModel(ServedPythonModel):
    capability = ITEM_LOOKUP
