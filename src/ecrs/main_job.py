"""The main job: from data to recommendations printed by a running server.

The job writes the data set (generated shop data, or MovieLens 100K when a
folder is given), trains, and exports a new version into the served
repository. It then starts the servers (or reloads the models of a running
Triton) and loads the stores. Last, it prints recommendations for a known
user and a new user, and the error for an unknown user id. The servers keep
running afterwards.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from ecrs.client.cli import format_table
from ecrs.client.client import RecommendClient
from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.data.movielens import load_movielens
from ecrs.errors import EcrsError, NotFoundError
from ecrs.export.repository import export_checkpoint
from ecrs.stack.running import ensure_running, serve_version
from ecrs.stores.loader import load_stores
from ecrs.training.pipeline import TrainingParams, train

logger = logging.getLogger(__name__)

UNKNOWN_USER_ID = "no-such-user"


def run(stack: StackConfig, *, movielens: Path | None = None, seed: int = 0) -> int:
    dataset = prepare_data(stack.state_dir, movielens, seed)
    name = dataset.schema.name
    _step(f"training on {len(dataset.interactions)} interactions")
    checkpoint = train(
        dataset, stack.state_dir / "checkpoints" / name, TrainingParams()
    )
    _step("exporting to ONNX")
    exported = export_checkpoint(checkpoint, stack.model_repository)
    print(f"exported version {exported.version} into {stack.model_repository}")
    _step("starting Redis, Milvus and tritonserver")
    running = ensure_running(stack)
    _step("loading the stores")
    loaded = load_stores(
        dataset, running.model_repository, running.stores, version=exported.version
    )
    print(
        f"loaded {loaded.users} users and {loaded.items} items "
        f"(Milvus collection {loaded.collection})"
    )
    serve_version(
        running.triton_grpc_url,
        running.model_repository,
        running.stores,
        loaded.version,
        log_hint=f"see {running.logs_dir / 'triton.log'}",
    )
    print_recommendations(running, dataset)
    ecrs = Path(sys.executable).parent / "ecrs"
    print(
        f"\nThe servers keep running. Stop them with: {ecrs} --state-dir {stack.state_dir} stack stop"
    )
    return 0


def prepare_data(state_dir: Path, movielens: Path | None, seed: int) -> Dataset:
    """Write the main job's data set into the state folder and load it back."""
    if movielens is not None:
        _step(f"importing MovieLens 100K from {movielens}")
        dataset, report = load_movielens(movielens)
        print(report.summary())
    else:
        _step("generating shop data")
        dataset = generate_shop_dataset(
            num_users=6000, num_items=3000, num_interactions=150_000, seed=seed
        )
    folder = dataset.save(state_dir / "data" / dataset.schema.name)
    return Dataset.load(folder)


def print_recommendations(stack: StackConfig, dataset: Dataset) -> None:
    schema = dataset.schema
    known = most_active_user(dataset)
    profile = new_user_profile(dataset)
    with RecommendClient(stack.triton_grpc_url) as client:
        _step(f"top 10 for known user {known}")
        print(format_table(client.recommend(user_id=known, top_n=10)))
        _step(f"top 10 for a new user with features {profile}")
        print(format_table(client.recommend(user_features=profile, top_n=10)))
        _step(f"an unknown user id ({UNKNOWN_USER_ID!r})")
        try:
            client.recommend(user_id=UNKNOWN_USER_ID)
        except NotFoundError as exc:
            print(f"{exc.status}: {exc}")
        else:
            raise EcrsError(
                f"user {UNKNOWN_USER_ID!r} unexpectedly got recommendations"
            )
    logger.debug("schema %s served", schema.name)


def most_active_user(dataset: Dataset) -> str:
    """Return the id of the user with the most interactions (ties: smallest id)."""
    counts = dataset.interactions[dataset.schema.interactions.user_id].value_counts()
    top = counts[counts == counts.max()].index
    return str(min(top))


def new_user_profile(dataset: Dataset) -> dict[str, str]:
    """Return the raw features of the first user as a new user's profile."""
    row: pd.Series = dataset.users.iloc[0]
    features = dataset.schema.users.feature_names
    return {name: row[name] for name in features if row[name] is not None}


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)
