"""Item vectors in Milvus, one collection per exported model version.

The item vectors of version N were computed by item tower N, so a user
vector of version N must only search collection ``<prefix>_items_v<N>``.
Searches use Bounded consistency: Strong would wait about 200 ms for Milvus's
time tick on every query. Loading waits until the new rows are searchable.

Besides the id and the vector, each row stores the item's value of every
single-valued item feature as a VARCHAR field of the same name, so that a
request filter on those features runs inside the search expression.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.prepare import Prepare
from pymilvus.client.utils import check_status

from ecrs.config import StoreConfig
from ecrs.data.schema import EntityTable
from ecrs.errors import StackError, UnavailableError

logger = logging.getLogger(__name__)

# A Milvus field name: a letter or underscore, then letters, digits, underscores.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
ID_FIELD = "item_id"
VECTOR_FIELD = "embedding"
MAX_ID_LENGTH = 512
# Milvus's largest VARCHAR; it stores only the bytes a value has.
MAX_FILTER_VALUE_LENGTH = 65_535
INSERT_BATCH = 5000
# A search fails with UNAVAILABLE after this many store timeouts.
DEADLINE_FACTOR = 2
# Searches in flight at once per store; more wait for a free thread.
SEARCH_THREADS = 8
T = TypeVar("T")
# Up to this many items the collection gets an exact (FLAT) index, above it
# IVF_FLAT. 'ecrs benchmark' chose FLAT at 10,000 items, where HNSW and IVF
# missed recall@200 of 0.95, and IVF_FLAT at 100,000, where FLAT was slower
# and HNSW (M=16) reached about 0.8: items with equal features have equal
# vectors, which HNSW handles poorly.
# NOTE: the crossover between 10,000 and 100,000 items was not measured.
FLAT_INDEX_MAX_ITEMS = 20_000
# Lists an IVF search probes. With 200 results, 'ecrs benchmark' measured
# recall@200 0.995 at 5 ms p50 probing 125 of 4,000 lists (1,000,000 items),
# where an eighth of the lists (500) gave 0.999 at 24 ms; at 100,000 items
# (1,264 lists) 39 probes gave 0.930 and 158 gave 0.991.
IVF_PROBES = 128


@dataclass(frozen=True)
class Index:
    """A Milvus index type with its build and search parameters."""

    index_type: str
    build_params: dict
    search_params: dict

    @classmethod
    def for_size(cls, items: int) -> Index:
        if items <= FLAT_INDEX_MAX_ITEMS:
            return cls("FLAT", {}, {})
        nlist = ivf_lists(items)
        return cls(
            "IVF_FLAT",
            {"nlist": nlist},
            default_search_params({"index_type": "IVF_FLAT", "nlist": nlist}, 0),
        )


def ivf_lists(items: int) -> int:
    """Return an IVF list count of about 4 times the square root of ``items``,
    the usual starting point, within Milvus's range of 1 to 65536."""
    return int(min(65536, max(16, 4 * math.sqrt(items))))


def default_search_params(index: Mapping[str, Any], limit: int) -> dict:
    """Return serving's search parameters for an index (its type and build
    parameters, as ``describe_index`` returns them) and a result limit.

    HNSW returns at most ``ef`` results, so ``ef`` reaches the limit. IVF
    probes ``IVF_PROBES`` lists, or every list of a smaller index.
    """
    index_type = index.get("index_type")
    if index_type == "HNSW":
        return {"ef": max(256, limit)}
    if index_type == "IVF_FLAT":
        return {"nprobe": max(1, min(IVF_PROBES, int(index.get("nlist") or 1024)))}
    return {}


def filter_columns(items: EntityTable) -> list[str]:
    """Return the item features a collection stores for search expressions.

    Multi-valued features stay out, because a VARCHAR field stores one value.
    So does a column whose name Milvus rejects as a field name or that
    collides with the id or vector field.
    """
    return [
        spec.name
        for spec in items.features
        if not spec.multi_valued
        and FIELD_NAME.fullmatch(spec.name)
        and spec.name not in (ID_FIELD, VECTOR_FIELD)
    ]


def filter_values(record: Mapping[str, Any], fields: Sequence[str]) -> dict[str, str]:
    """Return an item's raw value of each filter field, "" where it has none."""
    values = {}
    for field_name in fields:
        value = record.get(field_name)
        text = "" if value is None or value != value else str(value)  # NaN is missing
        # NOTE: a longer value is cut to fit, so a filter on it matches nothing.
        encoded = text.encode("utf-8")[:MAX_FILTER_VALUE_LENGTH]
        values[field_name] = encoded.decode("utf-8", errors="ignore")
    return values


def collection_name(prefix: str, version: int) -> str:
    return f"{prefix}_items_v{version}"


class VectorStore:
    """Create, fill and search the item vector collections in Milvus.

    The connection opens on first use and again after a failure, so the store
    recovers by itself when Milvus comes back.
    """

    def __init__(self, config: StoreConfig) -> None:
        self.uri = config.milvus_uri
        # The address in messages: the URI without any password in it.
        self.address = config.milvus_address
        self.token = config.milvus_token
        self.prefix = config.key_prefix
        self.timeout_s = config.timeout_s
        self._client: MilvusClient | None = None
        self._search_params: dict[str, dict] = {}
        self._filter_fields: dict[str, list[str]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=SEARCH_THREADS, thread_name_prefix="milvus"
        )

    @property
    def client(self) -> MilvusClient:
        if self._client is None:
            with self._errors("connect"):
                self._client = MilvusClient(
                    uri=self.uri, token=self.token or "", timeout=self.timeout_s
                )
        return self._client

    def collection(self, version: int) -> str:
        return collection_name(self.prefix, version)

    def create(
        self, name: str, dim: int, index: Index, filter_fields: Sequence[str] = ()
    ) -> None:
        """Create (or re-create) an empty collection with its index.

        ``filter_fields`` are item columns stored as VARCHAR fields beside
        the vector, for search expressions.
        """
        with self._errors(f"create collection {name}"):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
            schema = MilvusClient.create_schema(
                auto_id=False, enable_dynamic_field=False
            )
            schema.add_field(
                ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH
            )
            schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
            for field_name in filter_fields:
                schema.add_field(
                    field_name, DataType.VARCHAR, max_length=MAX_FILTER_VALUE_LENGTH
                )
            index_params = self.client.prepare_index_params()
            index_params.add_index(
                field_name=VECTOR_FIELD,
                index_type=index.index_type,
                metric_type="IP",
                params=index.build_params,
            )
            self.client.create_collection(
                name,
                schema=schema,
                index_params=index_params,
                consistency_level="Bounded",
            )

    def insert(self, name: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Insert vectors in batches, flush, and wait until they are searchable."""
        self.write(name, ids, vectors)
        self.finish(name, len(ids))

    def write(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        replace: bool = False,
        records: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Write vectors in batches of ``INSERT_BATCH`` rows.

        ``records`` are the items' raw features, aligned with ``ids``; they
        fill the collection's filter fields, and a missing value is stored as
        an empty string. Milvus keeps every inserted row, even one whose id
        is already there. With ``replace``, each row is upserted instead,
        which replaces any row of the same id: the way to write rows that may
        already be stored.
        """
        fields = self.filter_fields(name)
        if fields and records is None:
            raise ValueError(
                f"collection {name} has filter fields {fields}; pass the items' records"
            )
        with self._errors(f"insert into {name}"):
            for start in range(0, len(ids), INSERT_BATCH):
                stop = start + INSERT_BATCH
                rows = [
                    {ID_FIELD: item_id, VECTOR_FIELD: vector.tolist()}
                    for item_id, vector in zip(ids[start:stop], vectors[start:stop])
                ]
                if fields:
                    for row, record in zip(rows, records[start:stop]):
                        row.update(filter_values(record, fields))
                if replace:
                    self.client.upsert(name, rows)
                else:
                    self.client.insert(name, rows)

    def finish(self, name: str, expected: int) -> int:
        """Flush and load ``name``, wait until ``expected`` rows are searchable
        and indexed, and return the row count."""
        with self._errors(f"flush {name}"):
            self.client.flush(name)
            self.client.load_collection(name)
        count = self.wait_visible(name, expected)
        self.settle_index(name)
        return count

    def settle_index(self, name: str, timeout_s: float = 1800.0) -> None:
        """Wait until the index of ``name`` covers every row, then load the
        collection again, unless its index is FLAT.

        Milvus 2.3 keeps serving a loaded segment without its new index for a
        while after building it: the benchmark measured the same recall for
        two IVF settings, as for a search that ignores the index. Releasing
        and loading makes every search use the index. Call this before the
        collection serves, since the release briefly takes it offline.
        """
        index_type = self.index_type(name)
        if index_type in (None, "FLAT"):
            return
        started = time.monotonic()
        self.wait_indexed(name, timeout_s=timeout_s)
        with self._errors(f"reload {name}"):
            self.client.release_collection(name)
            self.client.load_collection(name)
        logger.info(
            "the %s index of %s covers every row and is loaded after %.1f s",
            index_type,
            name,
            time.monotonic() - started,
        )

    def index_type(self, name: str) -> str | None:
        """Return the vector index type of ``name``, None when it has none."""
        with self._errors(f"describe the index of {name}"):
            indexes = self.client.list_indexes(name, timeout=self.timeout_s)
            if not indexes:
                return None
            described = self.client.describe_index(
                name, index_name=indexes[0], timeout=self.timeout_s
            )
        return described.get("index_type")

    def wait_visible(self, name: str, expected: int, timeout_s: float = 60.0) -> int:
        """Block until a Strong count returns at least ``expected`` rows in ``name``;
        return the count, which exceeds ``expected`` when rows were inserted twice."""
        deadline = time.monotonic() + timeout_s
        count = -1
        while time.monotonic() < deadline:
            count = self.count(name)
            if count >= expected:
                return count
            time.sleep(0.5)
        raise StackError(
            f"Milvus collection {name} shows {count} of {expected} vectors after "
            f"{timeout_s:.0f} s; check the Milvus log in the state folder"
        )

    def wait_indexed(self, name: str, timeout_s: float = 600.0) -> None:
        """Block until the index of ``name`` covers every row.

        Milvus builds indexes in the background after a flush, and searches
        scan the rows not indexed yet, so a load returns before the index is
        complete. Raises ``StackError`` after ``timeout_s`` seconds.
        """
        deadline = time.monotonic() + timeout_s
        described: dict = {}
        while time.monotonic() < deadline:
            with self._errors(f"describe the index of {name}"):
                indexes = self.client.list_indexes(name, timeout=self.timeout_s)
                if not indexes:
                    return
                described = self.client.describe_index(
                    name, index_name=indexes[0], timeout=self.timeout_s
                )
            if described.get("pending_index_rows", 0) == 0:
                return
            time.sleep(1.0)
        raise StackError(
            f"Milvus collection {name} has {described.get('indexed_rows')} of "
            f"{described.get('total_rows')} rows indexed after {timeout_s:.0f} s; "
            "check the Milvus log in the state folder"
        )

    def count(self, name: str) -> int:
        """Count the rows of ``name`` with Strong consistency."""
        with self._errors(f"count {name}"):
            rows = self.client.query(
                name,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
            )
        return int(rows[0]["count(*)"])

    def search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        search_params: dict | None = None,
        expression: str = "",
    ) -> tuple[list[str], np.ndarray]:
        """Return the ``limit`` nearest item ids and their inner products.

        Without ``search_params``, the parameters suit the collection's index.
        A non-empty ``expression`` (a Milvus boolean expression over the
        collection's filter fields) restricts the search to matching rows.
        """
        return self._within_deadline(
            f"search {name}",
            self._search,
            name,
            vector,
            limit,
            search_params,
            expression,
        )

    def _search(
        self,
        name: str,
        vector: np.ndarray,
        limit: int,
        search_params: dict | None,
        expression: str,
    ) -> tuple[list[str], np.ndarray]:
        if search_params is None:
            search_params = self.search_params(name, limit)
        with self._errors(f"search {name}"):
            request = Prepare.search_requests_with_expr(
                name,
                [vector.astype(np.float32).tolist()],
                VECTOR_FIELD,
                {"metric_type": "IP", "params": search_params},
                limit,
                expr=expression or None,
                output_fields=[],
                consistency_level="Bounded",
            )
            # NOTE: this calls pymilvus 2.5's gRPC stub directly, past
            # MilvusClient.search, which builds one Python object per hit:
            # about 1 ms of CPU for 200 hits on a 2-core machine. The request
            # is the one MilvusClient.search builds, and the connection keeps
            # its credentials; a newer pymilvus may move these internals.
            stub = self.client._get_connection()._stub
            response = stub.Search(request, timeout=self.timeout_s)
            check_status(response.status)
        results = response.results
        ids = list(results.ids.str_id.data)
        scores = np.asarray(results.scores, dtype=np.float32)
        return ids, scores

    def filter_fields(self, name: str) -> list[str]:
        """Return the filter fields of collection ``name``, cached per collection.

        A collection created before filter fields existed has none, and its
        searches filter after the search instead.
        """
        if name not in self._filter_fields:
            with self._errors(f"describe {name}"):
                described = self.client.describe_collection(
                    name, timeout=self.timeout_s
                )
            self._filter_fields[name] = [
                field["name"]
                for field in described["fields"]
                if field["name"] not in (ID_FIELD, VECTOR_FIELD)
            ]
        return self._filter_fields[name]

    def search_params(self, name: str, limit: int) -> dict:
        """Return search parameters for the index of ``name``, cached per collection."""
        if name not in self._search_params:
            with self._errors(f"describe the index of {name}"):
                indexes = self.client.list_indexes(name, timeout=self.timeout_s)
                described = (
                    self.client.describe_index(
                        name, index_name=indexes[0], timeout=self.timeout_s
                    )
                    if indexes
                    else {}
                )
            self._search_params[name] = {
                "index_type": described.get("index_type", "FLAT"),
                "nlist": described.get("nlist"),
            }
        return default_search_params(self._search_params[name], limit)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete the rows of ``ids`` from ``name``; absent ids are ignored."""
        with self._errors(f"delete from {name}"):
            for start in range(0, len(ids), INSERT_BATCH):
                self.client.delete(name, ids=list(ids[start : start + INSERT_BATCH]))

    def visible_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Return which of ``ids`` a query with serving's consistency level finds."""
        with self._errors(f"query {name}"):
            rows = self.client.query(
                name,
                ids=list(ids),
                output_fields=[ID_FIELD],
                consistency_level="Bounded",
                timeout=self.timeout_s,
            )
        return {row[ID_FIELD] for row in rows}

    def _within_deadline(self, action: str, call: Callable[..., T], *args: Any) -> T:
        """Run ``call`` and raise UnavailableError if it takes over the deadline.

        pymilvus's ``timeout`` bounds each attempt, but reconnecting to a
        stopped Milvus can take longer than that, so a request would wait for
        it past its own deadline.
        """
        future = self._executor.submit(call, *args)
        try:
            return future.result(timeout=self.timeout_s * DEADLINE_FACTOR)
        except concurrent.futures.TimeoutError:
            self._client = None
            raise UnavailableError(
                f"Milvus at {self.address} did not respond within "
                f"{self.timeout_s * DEADLINE_FACTOR:.0f} s ({action}); check that "
                "Milvus is running ('ecrs stack status')",
                service="milvus",
            ) from None

    def has_collection(self, name: str) -> bool:
        with self._errors(f"look up {name}"):
            return bool(self.client.has_collection(name))

    def drop(self, name: str) -> None:
        """Drop collection ``name`` if it exists."""
        with self._errors(f"drop {name}"):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        self._filter_fields.pop(name, None)
        self._search_params.pop(name, None)

    def load_state(self, name: str) -> str:
        """Return the load state of ``name``: Loaded, Loading, NotLoad or NotExist.

        Any Milvus error means Milvus cannot serve ``name`` now, so it raises
        UnavailableError. Measured: with Milvus stopped, pymilvus 2.5 raised
        a MilvusException without a code or message here.
        """
        try:
            with self._errors(f"look up {name}"):
                state = self.client.get_load_state(name, timeout=self.timeout_s)
        except MilvusException as exc:
            self._client = None
            raise UnavailableError(
                f"Milvus at {self.address} failed to report the load state of "
                f"{name} ({exc!r}); check that Milvus is running ('ecrs stack status')",
                service="milvus",
            ) from exc
        return str(getattr(state["state"], "name", state["state"]))

    def ping(self, name: str) -> None:
        """Raise UnavailableError unless Milvus responds and has collection
        ``name`` loaded, so that it serves searches.

        The lookup runs under the same deadline as a search. After a restart,
        Milvus 2.3.5 lists a collection while it is still loading it, and
        searches then time out (measured: for about 20 s).
        """
        state = self._within_deadline(f"look up {name}", self.load_state, name)
        if state == "NotExist":
            raise UnavailableError(
                f"Milvus at {self.address} has no collection {name}; load the "
                "stores for the served version with 'ecrs load'",
                service="milvus",
            )
        if state != "Loaded":
            raise UnavailableError(
                f"Milvus at {self.address} has not loaded collection {name} "
                f"(state {state}); Milvus loads its collections again after a "
                "restart, so retry in a few seconds",
                service="milvus",
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except MilvusException as exc:
            if _is_missing_collection(exc):
                raise UnavailableError(
                    f"Milvus at {self.address} has no collection for this request "
                    f"({action}): {exc.message}; load the stores for the served "
                    "version with 'ecrs load'",
                    service="milvus",
                ) from exc
            if _is_not_loaded(exc):
                raise UnavailableError(
                    f"Milvus at {self.address} has not loaded the collection "
                    f"({action}): {exc.message}; Milvus loads its collections "
                    "again after a restart, so retry in a few seconds",
                    service="milvus",
                ) from exc
            if _is_auth_error(exc):
                raise self._credentials_error(action, exc.message) from exc
            if _is_connection_error(exc):
                self._client = None
                raise UnavailableError(
                    f"Milvus at {self.address} is unavailable ({action}): {exc.message}; "
                    "check that Milvus is running ('ecrs stack status')",
                    service="milvus",
                ) from exc
            if _is_transient(exc):
                raise UnavailableError(
                    f"Milvus at {self.address} cannot serve this now ({action}): "
                    f"{exc.message} (Milvus error code {exc.code}); it is starting, "
                    "recovering or overloaded, so retry in a few seconds",
                    service="milvus",
                ) from exc
            if _is_request_fault(exc):
                raise
            raise UnavailableError(
                f"Milvus at {self.address} failed ({action}): {exc.message} "
                f"(Milvus error code {exc.code}); check Milvus's log and "
                "'ecrs stack status', then retry",
                service="milvus",
            ) from exc
        except ValueError as exc:
            # gRPC raises this for a call on a channel that another thread
            # closed while reconnecting. The search calls the stub directly,
            # so pymilvus does not wrap it.
            if "closed channel" not in str(exc).lower():
                raise
            self._client = None
            raise UnavailableError(
                f"Milvus at {self.address} is unavailable ({action}): {exc}; "
                "check that Milvus is running ('ecrs stack status')",
                service="milvus",
            ) from exc
        except grpc.RpcError as exc:
            # pymilvus lets gRPC errors of its connection set-up through as they are.
            self._client = None
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise self._credentials_error(action, details) from exc
            raise UnavailableError(
                f"Milvus at {self.address} is unavailable ({action}): {details}; "
                "check that Milvus is running ('ecrs stack status')",
                service="milvus",
            ) from exc

    def _credentials_error(self, action: str, details: str) -> UnavailableError:
        return UnavailableError(
            f"Milvus at {self.address} rejected the credentials ({action}): "
            f"{details}; check ECRS_MILVUS_TOKEN (user:password or an API key)",
            service="milvus",
        )


def _is_missing_collection(exc: MilvusException) -> bool:
    text = str(exc.message).lower()
    return "collection" in text and ("not found" in text or "not exist" in text)


def _is_not_loaded(exc: MilvusException) -> bool:
    """Return whether ``exc`` reports a collection that exists but is not
    loaded, the error of Milvus 2.3.5 searches for a few seconds after a
    restart."""
    return "not loaded" in str(exc.message).lower()


def _is_auth_error(exc: MilvusException) -> bool:
    text = str(exc.message).lower()
    return "auth" in text or "credential" in text or "password" in text


# Milvus's error codes (pkg/util/merr/errors.go) carry this flag where Milvus
# marks the error retriable: service not ready or unavailable, request or
# rate limit, collection not fully loaded.
RETRYABLE_FLAG = 1 << 16
# Codes without the flag that a restarting Milvus also returns for a few
# seconds: collection not loaded (101), replica not available (401), channel
# not found, lacking or not available (500, 501, 503), segment not loaded or
# lacking (601, 602), and query node not found, offline, lacking, not
# matching or not available (901 to 905).
PASSING_CODES = frozenset({101, 401, 500, 501, 503, 601, 602, *range(901, 906)})


# pymilvus marks the exceptions it raises itself with this code; Milvus
# sends code 1 only with the retriable flag.
PYMILVUS_CODE = 1
# Milvus's codes for an invalid or missing request parameter.
PARAMETER_CODES = range(1100, 1200)


def _error_code(exc: MilvusException) -> int | None:
    """Return the integer error code of ``exc``, or None where it has none.

    When its retries on gRPC errors run out, pymilvus's retry decorator
    passes gRPC's ``code`` method, not its value.
    """
    return exc.code if isinstance(exc.code, int) else None


def _is_transient(exc: MilvusException) -> bool:
    """Return whether Milvus's error code means the same request can succeed
    later. pymilvus's own exceptions carry code 1 without the flag, so they
    never count."""
    code = _error_code(exc)
    if code is None:
        return False
    return bool(code & RETRYABLE_FLAG) or code in PASSING_CODES


def _is_request_fault(exc: MilvusException) -> bool:
    """Return whether ``exc`` blames the request ECRS built, not Milvus.

    pymilvus's own checks and Milvus's parameter codes do: such an error is
    a defect in ECRS and stays an internal error. Any other code means
    Milvus failed a valid request, which callers see as Milvus unavailable.
    A Milvus restarting under load can return codes not listed as
    transient, and statuses in Milvus's legacy form carry code 0.
    """
    code = _error_code(exc)
    return code == PYMILVUS_CODE or code in PARAMETER_CODES


def _is_connection_error(exc: MilvusException) -> bool:
    """Return whether ``exc`` means Milvus cannot be reached.

    An exception without a message is one too: pymilvus raises it for a call
    on a gRPC channel that a lost connection closed.
    """
    if not exc.message:
        return True
    text = f"{exc.code} {exc.message}".lower()
    return any(
        word in text
        for word in (
            "unavailable",
            "connect",
            "deadline",
            "timeout",
            "fail to",
            "closed channel",
        )
    )
