"""recall_candidates: recall candidates with their similarity for a known or new user.

The logic lives in ``ecrs.serving``; ``ServedPythonModel`` turns Triton
requests into calls to it.
"""

from ecrs.serving.layout import RECALL_CANDIDATES
from ecrs.serving.triton_adapter import ServedPythonModel


class TritonPythonModel(ServedPythonModel):
    capability = RECALL_CANDIDATES
