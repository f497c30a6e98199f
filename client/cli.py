"""``ecrs-client``: recommendations, lookups, recall and ranking from a running server.

Each command prints a table, or JSON with ``--json``. Errors print one line
starting with the Triton status and exit with 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ecrs.client.client import DEFAULT_URL, RecommendClient, RecommendedItem
from ecrs.errors import EcrsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecrs-client",
        description="Request recommendations from recommend_ensemble over Triton gRPC.",
    )
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help=f"Triton gRPC address (default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="request deadline in seconds (default 10)",
    )
    _add_tls_options(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    recommend = commands.add_parser("recommend", help="recommend items for one user")
    _add_user_options(recommend)
    recommend.add_argument(
        "--top-n", type=int, help="number of items to return (default: the server's)"
    )
    _add_exclude_seen(recommend)
    recommend.add_argument(
        "--filter",
        help='keep only items with one of these values, e.g. \'{"category": ["shoes"]}\'',
    )
    recommend.add_argument(
        "--cap",
        help='the maximum number of results that may share one value, e.g. \'{"brand": 2}\'',
    )
    recommend.set_defaults(run=_recommend)

    user = commands.add_parser("user", help="a known user's features and recent items")
    user.add_argument("user_id", help="id of a known user")
    user.set_defaults(run=_user, features=None)

    items = commands.add_parser("items", help="the details of items by id")
    items.add_argument("item_ids", nargs="+", help="item ids")
    items.set_defaults(run=_items, features=None)

    recall = commands.add_parser("recall", help="recall candidates with their similarity")
    _add_user_options(recall)
    recall.add_argument(
        "--candidates", type=int, help="number of candidates (default: the server's)"
    )
    _add_exclude_seen(recall)
    recall.set_defaults(run=_recall)

    rank = commands.add_parser("rank", help="score a list of items for one user")
    _add_user_options(rank)
    rank.add_argument("item_ids", nargs="+", help="item ids to rank")
    rank.set_defaults(run=_rank)
    for command in (recommend, user, items, recall, rank):
        command.add_argument(
            "--json", action="store_true", help="print JSON instead of a table"
        )
    return parser


def _add_user_options(parser: argparse.ArgumentParser) -> None:
    user = parser.add_mutually_exclusive_group(required=True)
    user.add_argument("--user-id", help="id of a known user")
    user.add_argument(
        "--features",
        help='a new user\'s raw features as a JSON object, e.g. \'{"age": "25-34"}\'',
    )


def _add_exclude_seen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="leave out the items a known user interacted with",
    )


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    tls_files = {
        "--root-certificates": "PEM file of the CA that signed Triton's gRPC "
        "certificate; turns on TLS",
        "--private-key": "PEM private key of this client, for mutual TLS",
        "--certificate-chain": "PEM certificate chain of this client, for mutual TLS",
    }
    for flag, help_text in tls_files.items():
        parser.add_argument(flag, default=None, help=help_text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        features = _parse_features(args.features)
        with RecommendClient(
            args.url,
            timeout_s=args.timeout,
            root_certificates=args.root_certificates,
            private_key=args.private_key,
            certificate_chain=args.certificate_chain,
        ) as client:
            args.run(client, args, features)
    except EcrsError as exc:
        status = f"{exc.status}: " if exc.status else ""
        print(f"ecrs-client: error: {status}{exc}", file=sys.stderr)
        if getattr(args, "json", False):
            error = {"status": exc.status or "ERROR", "message": str(exc)}
            _print_json({"error": error})
        return 1
    return 0


def _recommend(client: RecommendClient, args: argparse.Namespace, features: dict | None) -> None:
    items = client.recommend(
        user_id=args.user_id,
        user_features=features,
        top_n=args.top_n,
        exclude_seen=args.exclude_seen,
        filters=_parse_json_object(args.filter, "--filter"),
        cap=_parse_json_object(args.cap, "--cap"),
    )
    if items.unknown_features:
        print(unknown_features_note(items.unknown_features, features), file=sys.stderr)
    if items.model_version is not None:
        print(
            f"served by version {items.model_version} "
            f"(collection {items.collection})",
            file=sys.stderr,
        )
    if args.json:
        _print_json([item.__dict__ for item in items])
    else:
        print(format_table(items))


def _user(client: RecommendClient, args: argparse.Namespace, features: None) -> None:
    profile = client.user(args.user_id)
    if args.json:
        _print_json(profile.__dict__)
        return
    for name, value in profile.features.items():
        print(f"{name}: {value}")
    print(f"recent items: {', '.join(profile.recent_items) or '(none)'}")


def _items(client: RecommendClient, args: argparse.Namespace, features: None) -> None:
    found = client.items(args.item_ids)
    _note_missing(found.missing)
    if args.json:
        _print_json(found.__dict__)
        return
    for item_id, details in found.items.items():
        print(item_id, "  ".join(f"{key}={value}" for key, value in details.items()))


def _recall(client: RecommendClient, args: argparse.Namespace, features: dict | None) -> None:
    candidates = client.recall(
        user_id=args.user_id,
        user_features=features,
        candidates=args.candidates,
        exclude_seen=args.exclude_seen,
    )
    if args.json:
        _print_json([{"item_id": item_id, "similarity": value} for item_id, value in candidates])
        return
    for rank, (item_id, value) in enumerate(candidates, start=1):
        print(f"{rank:>4}  {item_id}  {value:.4f}")


def _rank(client: RecommendClient, args: argparse.Namespace, features: dict | None) -> None:
    ranked = client.rank(args.item_ids, user_id=args.user_id, user_features=features)
    _note_missing(ranked.missing)
    if args.json:
        _print_json(
            {
                "items": [{"item_id": item_id, "score": score} for item_id, score in ranked.items],
                "missing": ranked.missing,
            }
        )
        return
    for rank, (item_id, score) in enumerate(ranked.items, start=1):
        print(f"{rank:>4}  {item_id}  {score:.4f}")


def _note_missing(missing: Sequence[str]) -> None:
    if missing:
        print(f"ecrs-client: note: not found: {', '.join(missing)}", file=sys.stderr)


def _print_json(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def unknown_features_note(names: Sequence[str], features: dict | None) -> str:
    """Describe the user feature values that the models read as unknown."""
    if features is None:
        listed = ", ".join(names)
    else:
        listed = ", ".join(f"{name}={features.get(name)!r}" for name in names)
    return (
        f"ecrs-client: note: values not seen in training, read as unknown: {listed}; "
        "use a value from the training data for a more personal result"
    )


def _parse_features(raw: str | None) -> dict | None:
    return _parse_json_object(raw, "--features")


def _parse_json_object(raw: str | None, flag: str) -> dict | None:
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EcrsError(f"{flag} is not valid JSON ({exc}); pass a JSON object") from exc
    if not isinstance(parsed, dict):
        raise EcrsError(f"{flag} must be a JSON object, got {raw!r}")
    return parsed


def format_table(items: Sequence[RecommendedItem]) -> str:
    """Format items as a fixed-width table: rank, item id, score, then details."""
    if not items:
        return "(no items)"
    detail_keys = sorted({key for item in items for key in item.details})
    header = ["#", "item_id", "score", *detail_keys]
    rows = [
        [
            str(rank),
            item.item_id,
            f"{item.score:.4f}",
            *[item.details.get(key, "") for key in detail_keys],
        ]
        for rank, item in enumerate(items, start=1)
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
