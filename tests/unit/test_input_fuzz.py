"""Hostile command lines and import files: every failure is a clean error.

Hypothesis draws argument lists for the ``ecrs`` subcommands that need no
running stack or fail without one, and data set folders with random
schemas and table bytes. Each command line must end with an exit status:
0, 1 for an ``ecrs: error`` line, or 2 for an argument error. Each import
must return or raise ``DataError`` or ``ConfigError``. Any other exception
is a defect.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecrs.cli import main
from ecrs.data.importer import import_dataset
from ecrs.errors import ConfigError, DataError

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Subcommands and their flags. Commands that train, start servers or
# generate data of a requested size are left out: their work is slow by
# design, not a parsing matter.
COMMANDS = {
    ("data", "import"): ["--source", "--out", "--max-bad-share"],
    ("data", "movielens"): ["--source", "--out", "--max-bad-share"],
    ("load",): ["--data", "--version", "--repository", "--triton-url", "--batch-size"],
    ("export",): ["--checkpoint", "--repository", "--source-repository", "--device"],
    ("items", "upsert"): ["--file"],
    ("items", "remove"): [],
    ("users", "upsert"): ["--file"],
    ("users", "delete"): [],
    ("events", "record"): ["--file"],
    ("stack", "status"): [],
    ("stack", "stop"): [],
    ("versions",): [],
    ("promote",): [],
    ("rollback",): ["--to"],
    ("faults",): ["--duration", "--concurrency", "--report", "--short"],
}
VALUES = st.one_of(
    st.text(max_size=20),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=30
    ),
    st.sampled_from(
        [
            "0",
            "-1",
            "1e309",
            "nan",
            "inf",
            "99999999999999999999",
            "1.5",
            "",
            " ",
            "-",
            "--",
            "/",
            ".",
            "..",
            "/dev/null",
            "/proc/self/status",
            "\udcff",
            "30m",
            "0s",
        ]
    ),
    st.integers().map(str),
)


@st.composite
def command_lines(draw, folder: Path):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    flags = COMMANDS[command]
    tokens = []
    for _ in range(draw(st.integers(0, 6))):
        if flags and draw(st.booleans()):
            tokens.append(draw(st.sampled_from(flags)))
        tokens.append(draw(VALUES))
    if ("faults",) == command and "--short" not in tokens:
        # A well-formed faults command would build a stack; keep it malformed.
        tokens.append("--duration=-1")
    return ["--state-dir", str(folder), *command, *tokens]


def run_cli(argv: list[str]) -> int:
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        try:
            return main(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 2


def test_cli_fails_cleanly_on_hostile_arguments(tmp_path):
    state = tmp_path / "state"

    @FUZZ
    @given(command_lines(state))
    def case(argv):
        assert run_cli(argv) in (0, 1, 2)

    case()


SCHEMA = {
    "name": "team",
    "users": {"file": "users.csv", "id": "user_id", "features": ["age"]},
    "items": {"file": "items.csv", "id": "item_id", "features": ["brand"]},
    "interactions": {"file": "interactions.csv"},
}
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def schemas(draw) -> bytes:
    """The valid schema (half the cases, so the tables get fuzzed), the valid
    schema with one field replaced, random JSON, or random bytes."""
    choice = draw(st.integers(0, 7))
    if choice >= 4:
        return json.dumps(SCHEMA).encode()
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    schema = json.loads(json.dumps(SCHEMA))
    if choice == 2:
        section = draw(st.sampled_from(["name", "users", "items", "interactions"]))
        schema[section] = draw(JSON_VALUES)
    else:
        table = draw(st.sampled_from(["users", "items"]))
        key = draw(st.sampled_from(["file", "id", "features", "attributes"]))
        schema[table][key] = draw(JSON_VALUES)
    return json.dumps(schema).encode()


CELLS = st.one_of(
    st.sampled_from(
        ["u1", "i1", "25-34", "Acme", "1700000000", "1.7e9", "", '"', '""', "x,y"]
    ),
    st.text(max_size=8),
    st.binary(max_size=8).map(lambda raw: raw.decode("latin-1")),
)


@st.composite
def table_bytes(draw, header: str) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=300))
    rows = [header] if draw(st.integers(0, 5)) else []
    for _ in range(draw(st.integers(0, 6))):
        cells = draw(st.lists(CELLS, max_size=6))
        rows.append(",".join(cells))
    text = "\n".join(rows) + draw(st.sampled_from(["\n", "", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


def write_case(
    folder: Path, schema: bytes, users: bytes, items: bytes, interactions: bytes
):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_bytes(schema)
    for name, content in (
        ("users", users),
        ("items", items),
        ("interactions", interactions),
    ):
        (folder / f"{name}.csv").write_bytes(content)


def test_import_fails_cleanly_on_hostile_files(tmp_path):
    counter = iter(range(10**6))

    @FUZZ
    @given(
        schemas(),
        table_bytes("user_id,age"),
        table_bytes("item_id,brand"),
        table_bytes("user_id,item_id,event,timestamp"),
    )
    def case(schema, users, items, interactions):
        folder = tmp_path / str(next(counter))
        write_case(folder / "source", schema, users, items, interactions)
        try:
            import_dataset(folder / "source", folder / "out")
        except (DataError, ConfigError):
            pass

    case()


@pytest.mark.parametrize(
    "schema",
    [b"\xff\xfe", b"[]", b'{"name": "x", "users": 1}'],
)
def test_import_rejects_malformed_schema(tmp_path, schema):
    write_case(tmp_path / "source", schema, b"", b"", b"")
    with pytest.raises(DataError):
        import_dataset(tmp_path / "source", tmp_path / "out")
