"""Run the fault suite against a loaded stack: soak, faults, full restart.

The load runs from the first second to the last. The soak comes first, with
catalogue changes. Then each fault of ``standard_faults`` runs in turn, with
a settling time before it and an observation time after its repair. Last,
the whole stack stops and starts again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import tritonclient.grpc as grpcclient

from ecrs.client.client import UNKNOWN_MODEL
from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.faults.churn import CatalogueChurn, ChurnCounts
from ecrs.faults.fuzz import FuzzResult, fuzz_model
from ecrs.faults.load import LoadGenerator, LoadSettings, Outcome
from ecrs.faults.memory import MemorySample, MemorySampler, stack_processes
from ecrs.faults.restart import Snapshot, take_snapshot
from ecrs.faults.scenarios import Fault, server_pids, standard_faults
from ecrs.faults.soak import SoakSummary, summarize_soak
from ecrs.faults.timeline import UNAVAILABLE, FaultWindow, judge_window
from ecrs.serving.layout import ONNX_MODELS, PYTHON_MODELS
from ecrs.stack.launcher import start_stack, stop_stack

logger = logging.getLogger(__name__)

# Users whose recommendations must be the same after a full restart.
SNAPSHOT_USERS = 10
SNAPSHOT_NEW_USERS = 3
# Seconds each window is observed past its recovery bound at least, so that
# an error after the bound shows in it.
PAST_BOUND_S = 5.0
# Every served model: the Python models, then the ONNX models they call.
FUZZED_MODELS = PYTHON_MODELS + ONNX_MODELS


@dataclass(frozen=True, kw_only=True)
class SuitePlan:
    """Durations of the suite's phases in seconds, and the load's concurrency."""

    soak_s: float
    # Quiet seconds before each fault, in which no request may fail.
    settle_s: float = 5.0
    # Seconds each fault is observed after its repair; at least its recovery
    # bound and PAST_BOUND_S more.
    observe_s: float = 20.0
    concurrency: int = 8
    # Seconds after the restarted stack is ready within which serving must
    # succeed again.
    restart_bound_s: float = 10.0
    # Hostile requests per served model after the restart; 0 skips them.
    fuzz_cases: int = 0


# The CI version sends no hostile requests here, because the test suite
# sends them to its own stack (tests/integration/test_fuzz.py).
FULL_PLAN = SuitePlan(soak_s=1800.0, observe_s=30.0, fuzz_cases=3000)
SHORT_PLAN = SuitePlan(soak_s=180.0)


@dataclass
class FuzzSummary:
    """Hostile requests per model, and the stubs and models that did not survive."""

    results: list[FuzzResult]
    replaced: list[str]
    not_ready: list[str]

    @property
    def passed(self) -> bool:
        unexpected = sum(result.unexpected_count for result in self.results)
        return unexpected == 0 and not self.replaced and not self.not_ready


@dataclass
class RestartResult:
    """The full stop and start: how long it took, and what differed."""

    window: FaultWindow
    stop_s: float
    start_s: float
    before: Snapshot
    after: Snapshot
    differences: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """Say which of the restart's checks failed, each in a few words."""
        changed = [f"{len(self.differences)} differences"] if self.differences else []
        return self.window.failures + changed

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class SuiteResult:
    """Everything the report shows."""

    plan: SuitePlan
    soak: SoakSummary
    faults: list[FaultWindow]
    restart: RestartResult
    outcomes: list[Outcome]
    memory: list[MemorySample]
    churn: ChurnCounts
    duration_s: float
    fuzz: FuzzSummary | None = None

    @property
    def passed(self) -> bool:
        return (
            self.soak.passed
            and all(fault.passed for fault in self.faults)
            and self.restart.passed
            and (self.fuzz is None or self.fuzz.passed)
        )


def sample_users(dataset: Dataset) -> tuple[list[str], list[dict[str, Any]]]:
    """Return the known user ids and a list of new users' raw features."""
    schema = dataset.schema.users
    user_ids = [str(user) for user in dataset.users[schema.id]]
    profiles = [
        {name: row[name] for name in schema.feature_names if row[name] is not None}
        for _, row in dataset.users.head(200).iterrows()
    ]
    return user_ids, profiles


def run_suite(config: StackConfig, dataset: Dataset, plan: SuitePlan) -> SuiteResult:
    """Run the soak, the faults and the restart on a running, loaded stack."""
    user_ids, profiles = sample_users(dataset)
    load = LoadGenerator(
        config.triton_grpc_url,
        user_ids,
        profiles,
        LoadSettings(concurrency=plan.concurrency),
    )
    sampler = MemorySampler(config.state_dir, load.now)
    churn = CatalogueChurn(config, dataset, load.now)
    load.start()
    sampler.start()
    churn.start()
    try:
        logger.info("soak: %.0f s at concurrency %d", plan.soak_s, plan.concurrency)
        time.sleep(plan.soak_s)
        churn.stop()
        soak_end = load.now()
        # Each window's quiet time starts where the previous window ended, so
        # that every request from the soak's end on is judged.
        faults = []
        settled = soak_end
        for fault in standard_faults(user_ids[0]):
            faults.append(run_fault(config, load, fault, plan, settled))
            settled = faults[-1].end_s
        restart = restart_stack(config, load, dataset, plan, settled)
    finally:
        churn.stop()
        load.stop()
        sampler.stop()
    outcomes = load.outcomes()
    duration_s = load.now()
    fuzz = fuzz_models(config, plan.fuzz_cases) if plan.fuzz_cases else None
    soak = summarize_soak(outcomes, sampler.samples, churn.counts, 0.0, soak_end)
    return SuiteResult(
        plan,
        soak,
        faults,
        restart,
        outcomes,
        sampler.samples,
        churn.counts,
        duration_s,
        fuzz,
    )


def run_fault(
    config: StackConfig,
    load: LoadGenerator,
    fault: Fault,
    plan: SuitePlan,
    settled: float,
) -> FaultWindow:
    """Inject one fault under load and judge the window around it; requests
    that end between ``settled`` and the injection must all succeed."""
    time.sleep(plan.settle_s)
    before = server_pids(config)
    processes_before = labelled_pids(config)
    injected = load.now()
    logger.info("fault: %s", fault.name)
    deadline = fault.inject(config)
    repaired = load.now()
    time.sleep(observe_s(plan, fault.recovery_bound_s))
    after = server_pids(config)
    window = FaultWindow(
        fault.name,
        fault.dependency,
        injected,
        repaired,
        load.now(),
        fault.recovery_bound_s,
        settled_s=settled,
        error_latency_bound_s=fault.error_latency_bound_s,
        deadline=deadline,
    )
    window.restarted = [
        name
        for name, pid in before.items()
        if name not in fault.restarts and after.get(name) != pid
    ]
    window.replaced = replaced_processes(processes_before, labelled_pids(config))
    judged = judge_window(window, load.outcomes())
    logger.info(
        "%s: %d errors, recovered %.1f s after the repair", fault.name, judged.errors,
        judged.recovery_s,
    )  # fmt: skip
    return judged


def replaced_processes(
    before: dict[str, list[int]], after: dict[str, list[int]]
) -> list[str]:
    """Describe each process label that gained a pid it did not have before.

    A label whose process died and was not replaced lost a pid but gained
    none, so it is not listed: only a new process shows a replacement.
    """
    return [
        f"{label}: pids {pids} became {after.get(label, [])}"
        for label, pids in before.items()
        if set(after.get(label, [])) - set(pids)
    ]


def labelled_pids(config: StackConfig) -> dict[str, list[int]]:
    """Return the sorted pids of each process label of the stack."""
    labelled: dict[str, list[int]] = {}
    for pid, label in stack_processes(config.state_dir).items():
        labelled.setdefault(label, []).append(pid)
    return {label: sorted(pids) for label, pids in sorted(labelled.items())}


def fuzz_models(config: StackConfig, cases: int) -> FuzzSummary:
    """Send ``cases`` hostile requests to every served model, then check that
    no stub process died and every model is still READY."""
    before = labelled_pids(config)
    results = [
        fuzz_model(config.triton_grpc_url, model, cases) for model in FUZZED_MODELS
    ]
    after = labelled_pids(config)
    with grpcclient.InferenceServerClient(config.triton_grpc_url) as client:
        not_ready = [
            model for model in FUZZED_MODELS if not client.is_model_ready(model)
        ]
    replaced = [label for label in before if after.get(label) != before[label]]
    return FuzzSummary(results, replaced, not_ready)


def restart_stack(
    config: StackConfig,
    load: LoadGenerator,
    dataset: Dataset,
    plan: SuitePlan,
    settled: float,
) -> RestartResult:
    """Stop and start every server; compare snapshots taken before and after.
    Requests that end between ``settled`` and the stop must all succeed."""
    user_ids, profiles = sample_users(dataset)
    sample = user_ids[:SNAPSHOT_USERS], profiles[:SNAPSHOT_NEW_USERS]
    namespace = dataset.schema.name
    time.sleep(plan.settle_s)
    before = take_snapshot(config, namespace, *sample)
    injected = load.now()
    logger.info("restart: stopping the whole stack")
    stop_stack(config.state_dir)
    stopped = load.now()
    start_stack(config)
    repaired = load.now()
    time.sleep(observe_s(plan, plan.restart_bound_s))
    after = take_snapshot(config, namespace, *sample)
    window = FaultWindow(
        "stop and start the whole stack", "", injected, repaired, load.now(),
        plan.restart_bound_s, settled_s=settled,
    )  # fmt: skip
    judged = judge_window(window, load.outcomes(), expected=stopped_triton_error)
    return RestartResult(
        judged,
        round(stopped - injected, 1),
        round(repaired - stopped, 1),
        before,
        after,
        before.differences(after),
    )


def observe_s(plan: SuitePlan, recovery_bound_s: float) -> float:
    """Return how long to observe a window after its repair."""
    return max(plan.observe_s, recovery_bound_s + PAST_BOUND_S)


def stopped_triton_error(outcome: Outcome) -> bool:
    """Return whether a failed request is one a stopping or starting Triton
    gives: UNAVAILABLE (the client's own connection errors included, which
    name no store), or NOT_FOUND for a model Triton has unloaded on its way
    down ("Request for unknown model: ... has no available versions")."""
    if outcome.status == UNAVAILABLE:
        return True
    return outcome.status == "NOT_FOUND" and UNKNOWN_MODEL in outcome.message
