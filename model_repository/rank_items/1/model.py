"""rank_items: scores of a caller's item list for a user, best first.

The logic lives in ``ecrs.serving``; ``ServedPythonModel`` turns Triton
requests into calls to it.
"""

from ecrs.serving.layout import RANK_ITEMS
from ecrs.serving.triton_adapter import ServedPythonModel


class TritonPythonModel(ServedPythonModel):
    capability = RANK_ITEMS
