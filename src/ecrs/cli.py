"""``ecrs``: data, training, export, stores and the local stack.

Every command prints one line ``ecrs: error: ...`` and exits with status 1
when it fails on bad input or an unavailable server.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

# Importing paddle warns on every run that the ccache compiler cache is
# missing. ECRS compiles no Paddle extensions, so the warning is noise.
warnings.filterwarnings("ignore", message="No ccache found")
# Paddle's C++ logging (glog) prints warnings about its static graph during
# export that are about Paddle internals; GLOG_minloglevel=0 shows them again.
os.environ.setdefault("GLOG_minloglevel", "2")

from ecrs import commands
from ecrs.config import Ports, StackConfig, default_state_dir
from ecrs.errors import EcrsError
from ecrs.faults import command as fault_command
from ecrs.faults.command import parse_duration
from ecrs.rollout import commands as rollout_commands
from ecrs.stores.loader import LOAD_BATCH


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecrs", description="Two-stage e-commerce recommendation on Triton."
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="folder for data, checkpoints, the served model repository, server "
        "data and logs (default: $ECRS_STATE_DIR or ./.ecrs)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(subparsers)
    _add_model_commands(subparsers)
    _add_stack_commands(subparsers)
    _add_rollout_commands(subparsers)
    _add_main_command(subparsers)
    _add_benchmark_command(subparsers)
    _add_faults_command(subparsers)
    return parser


def _add_faults_command(subparsers: argparse._SubParsersAction) -> None:
    faults = subparsers.add_parser(
        "faults",
        help="run the fault suite: soak, dependency kills, slow Redis, full restart",
        description=(
            "Build a private stack in <state-dir>/faults (generated shop data, small "
            "models, free loopback ports), then keep requests flowing at the given "
            "concurrency through a soak with catalogue changes, a kill -9 and restart "
            "of Redis and of Milvus, a kill -9 of one model's stub, a paused Redis "
            "and a restart of the whole stack. Exits with 1 when a bound is missed."
        ),
    )
    faults.add_argument(
        "--duration",
        type=parse_duration,
        default=None,
        help="length of the soak, such as 30m or 180s (default 30m, or 3m with --short)",
    )
    faults.add_argument(
        "--short",
        action="store_true",
        help=(
            "the CI version: a 3-minute soak, shorter observation windows and "
            "no hostile requests (the test suite fuzzes the models itself)"
        ),
    )
    faults.add_argument(
        "--concurrency", type=_positive_int, default=8, help="requests in flight (default 8)"
    )
    faults.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write this Markdown page, with a JSON copy and a PNG beside it",
    )
    faults.set_defaults(handler=fault_command.run_faults)


def _add_rollout_commands(subparsers: argparse._SubParsersAction) -> None:
    rollout = subparsers.add_parser(
        "rollout",
        help="roll out a checkpoint as a new version of the local stack, without "
        "failed requests",
        description=(
            "Export the checkpoint as version N, compute every stored item's vector "
            "into collection N, load N in Triton, warm it up, compare it with the "
            "serving version on held-out users, and switch (or start a canary). "
            "A failed step leaves the serving version as it was."
        ),
    )
    rollout.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint folder"
    )
    rollout.add_argument(
        "--gate-data",
        type=Path,
        required=True,
        help="data set folder whose users' newest interactions are the held-out "
        "targets of the quality gate",
    )
    rollout.add_argument(
        "--canary",
        type=_share,
        default=0.0,
        help="share of users (0 to 1) that the new version serves as a canary "
        "instead of switching (default 0: switch)",
    )
    rollout.add_argument(
        "--margin",
        type=float,
        default=0.02,
        help="largest recall@50 drop against the serving version that the gate "
        "accepts (default 0.02)",
    )
    rollout.add_argument(
        "--force", action="store_true", help="switch even when the quality gate fails"
    )
    rollout.add_argument(
        "--keep",
        type=_positive_int,
        default=3,
        help="versions kept on disk with their collections (default 3)",
    )
    rollout.add_argument(
        "--gate-users",
        type=_positive_int,
        default=200,
        help="held-out users the gate requests (default 200)",
    )
    rollout.set_defaults(handler=rollout_commands.roll_out)

    promote = subparsers.add_parser(
        "promote", help="make the canary the serving version"
    )
    promote.set_defaults(handler=rollout_commands.promote)

    rollback = subparsers.add_parser(
        "rollback",
        help="end the canary, or serve the previous version again",
    )
    rollback.add_argument(
        "--to",
        type=_positive_int,
        default=None,
        help="version to serve (default: the previous one)",
    )
    rollback.set_defaults(handler=rollout_commands.roll_back)

    versions = subparsers.add_parser(
        "versions",
        help="list the exported versions: loaded, role, and their collections",
    )
    versions.set_defaults(handler=rollout_commands.show_versions)


def _add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="generate data, or import and validate a data set"
    )
    actions = data.add_subparsers(dest="action", required=True)

    generate = actions.add_parser("generate", help="generate synthetic shop data")
    generate.add_argument(
        "--out", type=Path, required=True, help="data set folder to write"
    )
    generate.add_argument(
        "--users", type=_positive_int, default=6000, help="number of users"
    )
    generate.add_argument(
        "--items", type=_positive_int, default=3000, help="number of items"
    )
    generate.add_argument(
        "--interactions",
        type=_positive_int,
        default=150_000,
        help="number of interactions",
    )
    generate.add_argument("--seed", type=int, default=0, help="random seed")
    generate.set_defaults(handler=commands.generate_data)

    movielens = actions.add_parser(
        "movielens", help="convert a MovieLens 100K folder (u.user, u.item, u.data)"
    )
    movielens.add_argument(
        "--source", type=Path, required=True, help="MovieLens 100K folder"
    )
    movielens.add_argument(
        "--out", type=Path, required=True, help="data set folder to write"
    )
    _add_bad_share(movielens)
    movielens.set_defaults(handler=commands.import_movielens)

    imported = actions.add_parser(
        "import", help="validate a data set folder and write a clean Parquet copy"
    )
    imported.add_argument(
        "--source", type=Path, required=True, help="folder with schema.json"
    )
    imported.add_argument(
        "--out", type=Path, required=True, help="data set folder to write"
    )
    _add_bad_share(imported)
    imported.set_defaults(handler=commands.import_data)


def _add_model_commands(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train the two-tower model and DeepFM")
    train.add_argument("--data", type=Path, required=True, help="data set folder")
    train.add_argument(
        "--out", type=Path, required=True, help="checkpoint folder to write"
    )
    _add_training_options(train)
    train.add_argument(
        "--holdout-share",
        type=float,
        default=0.2,
        help="share of each user's latest interactions held out for validation "
        "(default 0.2); 0 trains on everything, for the model to serve",
    )
    train.set_defaults(handler=commands.train_models)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="train and evaluate against baselines, cold start and the served path",
        description=(
            "Evaluate on the held-out interactions: popularity, item KNN, EASE, "
            "two-tower recall and two-tower + DeepFM, then a cold-start run. "
            "Trains on the training split unless --checkpoint is given."
        ),
    )
    evaluate.add_argument("--data", type=Path, required=True, help="data set folder")
    evaluate.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="evaluate this checkpoint instead of training one",
    )
    evaluate.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write a Markdown page here, with a JSON copy and a PNG of training curves",
    )
    evaluate.add_argument(
        "--served",
        action="store_true",
        help="also evaluate through Triton on a private stack and compare",
    )
    evaluate.add_argument(
        "--cold-start-share",
        type=float,
        default=0.1,
        help="share of users held out of training as new users (default 0.1; 0 skips)",
    )
    _add_training_options(evaluate)
    evaluate.set_defaults(handler=commands.evaluate_models)

    export = subparsers.add_parser(
        "export", help="export a checkpoint as a new version of the served repository"
    )
    export.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint folder"
    )
    export.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="served model repository (default: <state-dir>/model_repository)",
    )
    export.add_argument(
        "--source-repository",
        type=Path,
        default=None,
        help="source model_repository/ with the configs (default: the one of this checkout)",
    )
    export.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="where Triton runs the ONNX models: the instance kind of their "
        "configs (default cpu; gpu needs Triton's native ONNX Runtime backend)",
    )
    export.set_defaults(handler=commands.export_models)

    load = subparsers.add_parser(
        "load", help="load a data set into Redis and Milvus for the served version"
    )
    load.add_argument("--data", type=Path, required=True, help="data set folder")
    load.add_argument(
        "--version",
        type=_positive_int,
        default=None,
        help="model version (default: newest)",
    )
    load.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="served model repository; with it, load the stores that ECRS_REDIS_URL, "
        "ECRS_MILVUS_URI and the other ECRS_ variables name instead of the local "
        "stack's",
    )
    load.add_argument(
        "--triton-url",
        default=None,
        help="with --repository: Triton gRPC address (host:port) whose models to "
        "reload after loading",
    )
    load.add_argument(
        "--batch-size",
        type=_positive_int,
        default=LOAD_BATCH,
        help=f"items per batch, the work redone after a resume (default {LOAD_BATCH})",
    )
    load.set_defaults(handler=commands.load_data)


def _add_stack_commands(subparsers: argparse._SubParsersAction) -> None:
    _add_update_commands(subparsers)

    stack = subparsers.add_parser(
        "stack", help="start, stop or inspect the local servers"
    )
    actions = stack.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start Redis, Milvus and tritonserver")
    _add_ports(start)
    start.set_defaults(handler=commands.start_servers)
    stop = actions.add_parser("stop", help="stop the servers of the state folder")
    stop.set_defaults(handler=commands.stop_servers)
    status = actions.add_parser("status", help="show which servers run, and where")
    status.set_defaults(handler=commands.show_status)


def _add_main_command(subparsers: argparse._SubParsersAction) -> None:
    main = subparsers.add_parser(
        "main",
        help="run everything: data, training, export, servers, stores, recommendations",
    )
    main.add_argument(
        "--movielens",
        type=Path,
        default=None,
        help="use the MovieLens 100K folder instead of generated shop data",
    )
    main.add_argument("--seed", type=int, default=0, help="random seed")
    _add_ports(main)
    main.set_defaults(handler=commands.run_main_job)


def _add_benchmark_command(subparsers: argparse._SubParsersAction) -> None:
    benchmark = subparsers.add_parser(
        "benchmark",
        help="measure serving latency and throughput with perf_analyzer",
        description=(
            "For each catalogue size: generate shop data, train, export, start a "
            "private stack on free loopback ports, load it, choose the vector "
            "index by measurement, then measure recommend_ensemble with "
            "perf_analyzer over gRPC and a reference pipeline without Triton, "
            "at each concurrency."
        ),
    )
    benchmark.add_argument(
        "--items",
        type=_int_list,
        default=(10_000, 100_000),
        help="catalogue sizes in items, comma-separated (default 10000,100000)",
    )
    benchmark.add_argument(
        "--concurrency",
        type=_int_list,
        default=(1, 2, 4, 8, 16),
        help="concurrent requests to measure, comma-separated (default 1,2,4,8,16)",
    )
    benchmark.add_argument(
        "--report",
        type=Path,
        default=None,
        help="write a Markdown page here, with a JSON copy and a PNG plot beside it",
    )
    benchmark.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="folder for catalogues and stacks, reused across runs "
        "(default: <state-dir>/benchmark)",
    )
    benchmark.add_argument(
        "--users",
        type=_positive_int,
        default=10_000,
        help="users per catalogue (default 10000)",
    )
    benchmark.add_argument(
        "--interactions",
        type=_positive_int,
        default=100_000,
        help="interactions per catalogue (default 100000)",
    )
    benchmark.add_argument(
        "--dim", type=_positive_int, default=64, help="vector dimension (default 64)"
    )
    benchmark.add_argument(
        "--requests",
        type=_positive_int,
        default=1000,
        help="distinct requests in the input data (default 1000)",
    )
    benchmark.add_argument(
        "--measurement-ms",
        type=_positive_int,
        default=5000,
        help="perf_analyzer's measurement window in milliseconds (default 5000)",
    )
    benchmark.add_argument(
        "--reference-seconds",
        type=float,
        default=5.0,
        help="seconds the reference pipeline runs per concurrency (default 5)",
    )
    benchmark.add_argument(
        "--ann-queries",
        type=_positive_int,
        default=200,
        help="user vectors per index configuration in the recall study (default 200)",
    )
    benchmark.add_argument(
        "--levers",
        type=_int_list,
        default=(),
        help="catalogue sizes on which to measure each serving lever alone "
        "(item cache, dynamic batching, instance counts) at concurrency 1 and 8",
    )
    benchmark.add_argument("--seed", type=int, default=0, help="random seed")
    benchmark.set_defaults(handler=commands.run_benchmark)


def _add_update_commands(subparsers: argparse._SubParsersAction) -> None:
    """Online changes to the running stack's stores: items, users and events."""
    items = subparsers.add_parser(
        "items", help="add, update or remove catalogue items in the running stack"
    ).add_subparsers(dest="action", required=True)
    upsert = items.add_parser(
        "upsert", help="add or replace items from a CSV or Parquet file of the items table"
    )
    upsert.add_argument("--file", type=Path, required=True, help="items file")
    upsert.set_defaults(handler=commands.upsert_items)
    remove = items.add_parser("remove", help="remove items by id")
    remove.add_argument("item_ids", nargs="+", help="item ids")
    remove.set_defaults(handler=commands.remove_items)

    users = subparsers.add_parser(
        "users", help="add, update or delete users in the running stack"
    ).add_subparsers(dest="action", required=True)
    upsert = users.add_parser(
        "upsert", help="add or replace users from a CSV or Parquet file of the users table"
    )
    upsert.add_argument("--file", type=Path, required=True, help="users file")
    upsert.set_defaults(handler=commands.upsert_users)
    delete = users.add_parser(
        "delete", help="delete a user's features and interactions from the stores"
    )
    delete.add_argument("user_id", help="user id")
    delete.set_defaults(handler=commands.delete_user)

    events = subparsers.add_parser(
        "events", help="record interactions in the running stack"
    ).add_subparsers(dest="action", required=True)
    record = events.add_parser(
        "record", help="record interactions from a file with user id, item id and timestamp"
    )
    record.add_argument("--file", type=Path, required=True, help="events file")
    record.set_defaults(handler=commands.record_events)


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=_positive_int, default=64, help="vector dimension")
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="two-tower epochs (default 10)",
    )
    parser.add_argument(
        "--ranker-epochs",
        type=_positive_int,
        default=None,
        help="DeepFM epochs (default 4)",
    )
    parser.add_argument(
        "--history",
        type=_non_negative_int,
        default=20,
        help="recent items per user the models read (default 20; 0 for none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _add_ports(parser: argparse.ArgumentParser) -> None:
    defaults = Ports()
    for name in ("redis", "milvus", "triton_grpc", "triton_http", "triton_metrics"):
        flag = "--" + name.replace("_", "-") + "-port"
        parser.add_argument(
            flag,
            type=_port,
            default=getattr(defaults, name),
            help=f"default {getattr(defaults, name)}",
        )


def _add_bad_share(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-bad-share",
        type=float,
        default=0.01,
        help="fail when more than this share of a file's rows is invalid (default 0.01)",
    )


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below {minimum}; pass {minimum} or more")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a share from 0 to 1, such as 0.1"
        )
    return value


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _int_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of positive integers, such as 1,2,4."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(f"{text!r} has no values; pass a list such as 1,2,4")
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} has an empty entry; remove the extra comma"
        )
    return tuple(_positive_int(part) for part in parts)


def _non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port; pass 1 to 65535")
    return value


def stack_config(args: argparse.Namespace) -> StackConfig:
    """Build the stack settings from the global options and the port flags."""
    state_dir = (args.state_dir or default_state_dir()).resolve()
    if not hasattr(args, "redis_port"):
        return StackConfig(state_dir=state_dir)
    ports = Ports(
        redis=args.redis_port,
        milvus=args.milvus_port,
        triton_grpc=args.triton_grpc_port,
        triton_http=args.triton_http_port,
        triton_metrics=args.triton_metrics_port,
    )
    return StackConfig(state_dir=state_dir, ports=ports)


# Signals that end a command the way Ctrl-C does: a scheduler's or
# `timeout`'s SIGTERM, and SIGHUP from a closed terminal.
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised as Ctrl-C is so that a command stops what
    it started; ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    # Further signals of this kind would cut the stopping of servers short.
    for other in TERMINATING_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


def handle_termination() -> None:
    """Make SIGTERM and SIGHUP unwind the command like Ctrl-C: a command
    that started servers of its own (the fault suite, the benchmark) stops
    them.

    Paddle replaces these handlers when it is imported;
    ``ecrs.paddle_runtime`` puts them back. Python installs handlers from
    the main thread only, so a caller running ``main`` in another thread
    keeps its own.
    """
    if threading.current_thread() is threading.main_thread():
        for signum in TERMINATING_SIGNALS:
            signal.signal(signum, _terminate)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    handle_termination()
    try:
        return args.handler(args, stack_config(args)) or 0
    except EcrsError as exc:
        print(f"ecrs: error: {exc}", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"ecrs: stopped by {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("ecrs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
