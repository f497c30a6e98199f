"""The quality gate: a candidate version against the serving one, as served.

Both versions serve the same held-out users through ``recommend_ensemble``
with ``MODEL_VERSION`` pinned, so the gate measures exactly what each
version would serve. Each user's newest interaction in the held-out data
set is the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecrs.client.client import RecommendClient
from ecrs.data.dataset import Dataset
from ecrs.errors import NotFoundError
from ecrs.evaluation.metrics import ndcg_at_k, recall_at_k

RECALL_K = 50
NDCG_K = 10


@dataclass(frozen=True)
class GateMetrics:
    """recall@50 and NDCG@10 of one version over the held-out users."""

    version: int
    recall: float
    ndcg: float
    users: int

    def describe(self) -> str:
        return (
            f"version {self.version}: recall@{RECALL_K} {self.recall:.4f}, "
            f"NDCG@{NDCG_K} {self.ndcg:.4f} over {self.users} users"
        )


def held_out_targets(dataset: Dataset, max_users: int) -> dict[str, set[str]]:
    """Return each user's newest interacted item, for up to ``max_users`` users."""
    spec = dataset.schema.interactions
    frame = dataset.interactions.sort_values([spec.timestamp, spec.item_id])
    newest = frame.groupby(spec.user_id, sort=True).tail(1)
    targets = {
        str(row[spec.user_id]): {str(row[spec.item_id])} for _, row in newest.iterrows()
    }
    return dict(sorted(targets.items())[:max_users])


def measure(
    client: RecommendClient, version: int, targets: dict[str, set[str]]
) -> GateMetrics:
    """Serve every held-out user with ``version`` and score the lists."""
    ranked = {}
    for user_id in targets:
        try:
            items = client.recommend(
                user_id=user_id, top_n=RECALL_K, model_version=version
            )
        except NotFoundError:
            continue  # a user the stores do not have cannot be served by id
        ranked[user_id] = [item.item_id for item in items]
    relevant = {user_id: targets[user_id] for user_id in ranked}
    if not ranked:
        return GateMetrics(version, 0.0, 0.0, 0)
    return GateMetrics(
        version,
        recall_at_k(ranked, relevant, RECALL_K),
        ndcg_at_k(ranked, relevant, NDCG_K),
        len(ranked),
    )
