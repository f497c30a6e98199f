"""Evaluate through the served path: Triton, Redis and Milvus, over gRPC.

A private stack starts in its own folder on free loopback ports. The
checkpoint is exported into it, and the stores get the users, the items
and only the training interactions, so that each user's recent items and
seen items are what the offline evaluation used. Every evaluated user is then
asked for recommendations with ``exclude_seen``, as a client would.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ecrs.client.client import RecommendClient
from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.export.repository import export_checkpoint
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports
from ecrs.stores.loader import load_stores
from ecrs.training.checkpoint import Checkpoint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedRankings:
    """Each user's served item ids, best first, and the time the requests took."""

    rankings: dict[str, list[str]]
    seconds: float


def served_rankings(
    checkpoint: Checkpoint,
    dataset: Dataset,
    train: pd.DataFrame,
    users: Iterable[str],
    *,
    top_n: int,
    state_dir: Path,
) -> ServedRankings:
    """Start a private stack, load ``train`` and ask it for every user's top ``top_n``.

    ``state_dir`` starts empty: what an earlier evaluation left there (its
    versions, collections and interactions) is removed first.
    """
    stop_stack(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    config = StackConfig(state_dir=state_dir, ports=pick_free_ports())
    export_checkpoint(checkpoint, config.model_repository)
    start_stack(config)
    try:
        load_stores(
            replace(dataset, interactions=train), config.model_repository, config.stores
        )
        return _request_all(config, users, top_n)
    finally:
        stop_stack(config.state_dir)


def _request_all(config: StackConfig, users: Iterable[str], top_n: int) -> ServedRankings:
    rankings = {}
    started = time.perf_counter()
    with RecommendClient(config.triton_grpc_url) as client:
        for user_id in users:
            items = client.recommend(user_id=user_id, top_n=top_n, exclude_seen=True)
            rankings[user_id] = [item.item_id for item in items]
    seconds = time.perf_counter() - started
    logger.info("served %d users in %.1f s", len(rankings), seconds)
    return ServedRankings(rankings, seconds)
