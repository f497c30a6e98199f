"""Handlers of the ``ecrs`` subcommands.

Each handler takes the parsed arguments and the stack settings, does its
work through the library, and prints what a user needs to see next.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ecrs import main_job
from ecrs.config import StackConfig, StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.data.importer import ImportReport, import_dataset
from ecrs.data.movielens import load_movielens
from ecrs.errors import ConfigError, NotFoundError
from ecrs.evaluation.quality import QualityRun, run_quality
from ecrs.evaluation.report import check_report_folder, write_report
from ecrs.export.repository import export_checkpoint
from ecrs.stack import launcher, running
from ecrs.stores.loader import LoadResult, load_stores
from ecrs.stores.updates import StoreUpdater, read_entity_file, read_events_file
from ecrs.training.checkpoint import Checkpoint
from ecrs.training.deepfm import DeepFMTraining
from ecrs.training.pipeline import TrainingParams, train
from ecrs.training.two_tower import TwoTowerTraining

logger = logging.getLogger(__name__)


def generate_data(args: argparse.Namespace, stack: StackConfig) -> int:
    dataset = generate_shop_dataset(
        num_users=args.users,
        num_items=args.items,
        num_interactions=args.interactions,
        seed=args.seed,
    )
    dataset.save(args.out)
    print(f"wrote {_sizes(dataset)} to {args.out}")
    return 0


def import_movielens(args: argparse.Namespace, stack: StackConfig) -> int:
    dataset, report = load_movielens(args.source, max_bad_share=args.max_bad_share)
    dataset.save(args.out)
    _print_report(report)
    print(f"wrote {_sizes(dataset)} to {args.out}")
    return 0


def import_data(args: argparse.Namespace, stack: StackConfig) -> int:
    report = import_dataset(args.source, args.out, max_bad_share=args.max_bad_share)
    _print_report(report)
    print(f"wrote {_sizes(Dataset.load(args.out))} to {args.out}")
    return 0


def train_models(args: argparse.Namespace, stack: StackConfig) -> int:
    dataset = Dataset.load(args.data)
    train(dataset, args.out, training_params(args))
    print(f"wrote checkpoint {args.out}")
    return 0


def training_params(args: argparse.Namespace) -> TrainingParams:
    two_tower = {"output_dim": getattr(args, "dim", 64), "seed": args.seed}
    deepfm = {"seed": args.seed}
    if getattr(args, "epochs", None):
        two_tower["epochs"] = args.epochs
    if getattr(args, "ranker_epochs", None):
        deepfm["epochs"] = args.ranker_epochs
    return TrainingParams(
        two_tower=TwoTowerTraining(**two_tower),
        deepfm=DeepFMTraining(**deepfm),
        history_length=getattr(args, "history", TrainingParams.history_length),
        holdout_share=getattr(args, "holdout_share", TrainingParams.holdout_share),
    )


def evaluate_models(args: argparse.Namespace, stack: StackConfig) -> int:
    dataset = Dataset.load(args.data)
    if args.report is not None:
        check_report_folder(args.report)
    checkpoint = None
    if args.checkpoint is not None:
        checkpoint = Checkpoint.load(args.checkpoint)
        checkpoint.encoder.check_matches(dataset.schema)
    if not 0.0 <= args.cold_start_share < 1.0:
        raise ConfigError(
            f"--cold-start-share is {args.cold_start_share}; pass a share from 0 "
            "(no cold-start run) to below 1, such as 0.1"
        )
    run = run_quality(
        dataset,
        params=training_params(args),
        checkpoint=checkpoint,
        cold_start_share=args.cold_start_share,
        served_dir=stack.state_dir / "evaluation-stack" if args.served else None,
        seed=args.seed,
    )
    print(format_run(run))
    if args.report is not None:
        for path in write_report(run, args.report):
            print(f"wrote {path}")
    return 0


def format_run(run: QualityRun) -> str:
    """Format a quality run for the terminal: each table, then the targets."""
    parts = ["held-out users", run.main.format_table()]
    if run.cold_start is not None:
        parts += [f"\ncold-start users ({run.cold_start_users})", run.cold_start.format_table()]
    if run.served is not None:
        parts.append(
            f"\nserved two-stage metrics differ from offline by at most "
            f"{run.served.max_difference:.4f} (tolerance {run.served.tolerance})"
        )
    parts.append("\ntargets")
    for target in run.targets():
        parts.append(f"  {target.name}: {target.describe()}")
    return "\n".join(parts)


def export_models(args: argparse.Namespace, stack: StackConfig) -> int:
    repository = args.repository or stack.model_repository
    result = export_checkpoint(
        Checkpoint.load(args.checkpoint),
        repository,
        source=args.source_repository,
        device=args.device,
    )
    parity = ", ".join(f"{name} {diff:.1e}" for name, diff in result.parity.items())
    print(
        f"exported version {result.version} into {repository} (max |ONNX - Paddle|: {parity})"
    )
    return 0


def upsert_items(args: argparse.Namespace, stack: StackConfig) -> int:
    with _updater(stack) as updater:
        ids, records = read_entity_file(args.file, updater.schema.items, "items")
        change = updater.upsert_items(ids, records)
    print(
        f"upserted {change.items} items into Redis and {', '.join(change.collections)}; "
        "serving sees them now"
    )
    return 0


def remove_items(args: argparse.Namespace, stack: StackConfig) -> int:
    with _updater(stack) as updater:
        change = updater.remove_items(args.item_ids)
    if change.missing:
        missing = ", ".join(change.missing)
        print(f"ecrs: warning: not stored, so nothing to remove: {missing}", file=sys.stderr)
    print(
        f"removed {change.items} items from Redis and {', '.join(change.collections)}; "
        "serving no longer returns them"
    )
    return 0


def upsert_users(args: argparse.Namespace, stack: StackConfig) -> int:
    with _updater(stack) as updater:
        ids, records = read_entity_file(args.file, updater.schema.users, "users")
        count = updater.upsert_users(ids, records)
    print(f"upserted {count} users")
    return 0


def delete_user(args: argparse.Namespace, stack: StackConfig) -> int:
    with _updater(stack) as updater:
        existed = updater.delete_user(args.user_id)
    if not existed:
        raise NotFoundError(
            f"user id {args.user_id!r} is not in the stores; nothing was deleted",
            kind="user",
            id=args.user_id,
        )
    print(f"deleted user {args.user_id!r}: features and interactions")
    return 0


def record_events(args: argparse.Namespace, stack: StackConfig) -> int:
    with _updater(stack) as updater:
        users, items, timestamps = read_events_file(
            args.file, updater.schema.interactions
        )
        count = updater.record_interactions(users, items, timestamps)
    print(f"recorded {count} interactions")
    return 0


@contextmanager
def _updater(stack: StackConfig) -> Iterator[StoreUpdater]:
    live = running.running_config(stack.state_dir)
    updater = StoreUpdater(live.model_repository, live.stores)
    try:
        yield updater
    finally:
        updater.close()


def load_data(args: argparse.Namespace, stack: StackConfig) -> int:
    """Load the stores of the local stack, or with ``--repository``, the stores
    that the environment names (ECRS_REDIS_URL, ECRS_MILVUS_URI, ...)."""
    if args.triton_url and args.repository is None:
        raise ConfigError(
            f"--triton-url {args.triton_url} applies to --repository loads only; "
            "drop it to load and reload the local stack"
        )
    live = None
    if args.repository is None:
        live = running.running_config(stack.state_dir)
        repository, stores = live.model_repository, live.stores
    else:
        repository, stores = args.repository, StoreConfig.from_env()
    print(
        f"loading into Redis at {stores.redis_address} and Milvus at "
        f"{stores.milvus_address}"
    )
    result = load_stores(
        Dataset.load(args.data),
        repository,
        stores,
        version=args.version,
        batch_size=args.batch_size,
        show_progress=True,
    )
    _print_load_result(result)
    _serve_after_load(args, live, repository, stores, result.version)
    return 0


def _print_load_result(result: LoadResult) -> None:
    resumed = (
        f", resumed after {result.resumed_from} items" if result.resumed_from else ""
    )
    print(
        f"loaded {result.users} users, {result.items} items and "
        f"{result.interactions} interactions for version "
        f"{result.version} (Milvus collection {result.collection}, "
        f"{result.index_type} index) in {result.seconds:.1f} s{resumed}"
    )
    print(
        f"item vectors computed at {result.vector_rate:,.0f} items/s, features "
        f"and vectors written at {result.write_rate:,.0f} items/s"
    )


def _serve_after_load(
    args: argparse.Namespace,
    live: StackConfig | None,
    repository: Path,
    stores: StoreConfig,
    version: int,
) -> None:
    if live is not None:
        running.serve_version(
            live.triton_grpc_url,
            repository,
            stores,
            version,
            log_hint=f"see {live.logs_dir / 'triton.log'}",
        )
        print(f"Triton now serves version {version} from {repository}")
    elif args.triton_url:
        running.serve_version(args.triton_url, repository, stores, version)
        print(f"Triton at {args.triton_url} now serves version {version}")
    else:
        running.serve_version(None, repository, stores, version)
        print(
            f"version {version} is now the serving version; reload Triton "
            "(pass --triton-url) for it to serve"
        )


def start_servers(args: argparse.Namespace, stack: StackConfig) -> int:
    launcher.start_stack(stack)
    print(running.format_status(stack.state_dir))
    ecrs = Path(sys.executable).parent / "ecrs"
    print(f"stop them with: {ecrs} --state-dir {stack.state_dir} stack stop")
    return 0


def stop_servers(args: argparse.Namespace, stack: StackConfig) -> int:
    stopped = launcher.stop_stack(stack.state_dir)
    print(f"stopped {', '.join(stopped)}" if stopped else "no servers were running")
    return 0


def show_status(args: argparse.Namespace, stack: StackConfig) -> int:
    print(running.format_status(stack.state_dir))
    return 0


def run_benchmark(args: argparse.Namespace, stack: StackConfig) -> int:
    from ecrs.benchmark.perf import PerfSettings, perf_analyzer_env, perf_analyzer_path
    from ecrs.benchmark.report import report_paths, write_report
    from ecrs.benchmark.run import BenchmarkSettings, run_benchmark as measure

    if args.report is not None:
        report_paths(args.report)
        check_report_folder(args.report)
    # Fail before the long steps when perf_analyzer cannot run.
    perf_analyzer_path()
    perf_analyzer_env()
    if args.reference_seconds <= 0:
        raise ConfigError(
            f"--reference-seconds is {args.reference_seconds}; pass a positive number"
        )
    check_benchmark_sizes(args.items, args.levers, BenchmarkSettings.candidates)
    work_dir = (args.work_dir or stack.state_dir / "benchmark").resolve()
    check_work_dir(work_dir)
    settings = BenchmarkSettings(
        sizes=args.items,
        concurrencies=args.concurrency,
        work_dir=work_dir,
        users=args.users,
        interactions=args.interactions,
        dim=args.dim,
        requests=args.requests,
        perf=PerfSettings(measurement_ms=args.measurement_ms),
        reference_seconds=args.reference_seconds,
        ann_queries=args.ann_queries,
        seed=args.seed,
        lever_sizes=args.levers,
    )
    def write_so_far(run: dict) -> None:
        if args.report is not None:
            written = write_report(run, args.report)
            logger.info("wrote the figures so far to %s", ", ".join(map(str, written)))

    run = measure(settings, on_size=write_so_far)
    print(format_benchmark(run))
    if args.report is not None:
        for path in write_report(run, args.report):
            print(f"wrote {path}")
    return 0


def check_benchmark_sizes(
    items: Sequence[int], levers: Sequence[int], candidates: int
) -> None:
    """Reject a size given twice, one smaller than the candidates of each
    request, and lever sizes that are not measured."""
    small = [size for size in items if size < candidates]
    if small:
        raise ConfigError(
            f"--items {', '.join(map(str, small))} is below {candidates}, the "
            f"candidates each benchmark request asks for; pass {candidates} or more"
        )
    repeated = sorted({size for size in items if list(items).count(size) > 1})
    if repeated:
        raise ConfigError(
            f"--items lists {', '.join(map(str, repeated))} more than once; "
            "give each catalogue size once"
        )
    unmeasured = [size for size in levers if size not in items]
    if unmeasured:
        raise ConfigError(
            f"--levers {', '.join(map(str, unmeasured))} is not among --items "
            f"{','.join(map(str, items))}; add it to --items or leave it out"
        )


def check_work_dir(folder: Path) -> None:
    """Raise ConfigError unless ``folder`` exists or can be created, and is
    writable, before the benchmark builds anything in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"the benchmark's work folder {folder} cannot be created "
            f"({exc.strerror}); pass --work-dir naming a writable folder"
        ) from exc
    if not os.access(folder, os.W_OK):
        raise ConfigError(
            f"the benchmark's work folder {folder} is not writable; pass "
            "--work-dir naming a writable folder"
        )


def format_benchmark(run: dict) -> str:
    """Format a benchmark run for the terminal: a line per size and concurrency."""
    lines = []
    for size in run["sizes"]:
        reference = {row["concurrency"]: row for row in size["reference"]}
        for row in size["triton"]:
            ref = reference.get(row["concurrency"], {})
            lines.append(
                f"{size['items']:>9,} items, concurrency {row['concurrency']:>2}: "
                f"Triton {row['throughput']:6.0f} req/s p50 {row['p50_ms']:6.2f} ms "
                f"p99 {row['p99_ms']:6.2f} ms | reference "
                f"{ref.get('throughput', 0):6.0f} req/s p50 {ref.get('p50_ms', 0):6.2f} ms"
            )
    return "\n".join(lines)


def run_main_job(args: argparse.Namespace, stack: StackConfig) -> int:
    return main_job.run(stack, movielens=args.movielens, seed=args.seed)


def _sizes(dataset: Dataset) -> str:
    return (
        f"{len(dataset.users)} users, {len(dataset.items)} items and "
        f"{len(dataset.interactions)} interactions"
    )


def _print_report(report: ImportReport) -> None:
    print(report.summary())
