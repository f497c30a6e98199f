"""Write the fault suite's report: a Markdown page, its JSON data and a PNG.

The PNG has three panels on one time axis. The first shows requests per
second, successes and failures, with each fault's window shaded. The second
shows the p99 latency of the successes per second, and the third the
resident memory of each process label and the stack's shared memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ecrs.faults.run import PAST_BOUND_S, FuzzSummary, SuitePlan, SuiteResult
from ecrs.faults.scenarios import PAUSED_ERROR_BOUND_S
from ecrs.faults.soak import RSS_GROWTH_MIN_MIB, RSS_GROWTH_SHARE, SHM_GROWTH_MAX_MIB
from ecrs.faults.timeline import DEADLINE_SLACK_S, per_second
from ecrs.stack.machine import describe_machine, format_machine


def machine() -> dict[str, Any]:
    """Describe the machine the suite ran on: CPU, versions, memory and the
    load at the end."""
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        **describe_machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "memory_gib": round(memory_kib / 2**20, 1),
        "load_average": [round(value, 1) for value in os.getloadavg()],
    }


def result_data(result: SuiteResult) -> dict[str, Any]:
    """Return the report's data: everything but the single requests."""
    seconds = per_second(result.outcomes, 0.0, result.duration_s)
    restart = result.restart
    return {
        "passed": result.passed,
        "machine": machine(),
        "plan": asdict(result.plan),
        "duration_s": round(result.duration_s, 1),
        "requests": len(result.outcomes),
        "soak": asdict(result.soak),
        "soak_passed": result.soak.passed,
        "memory_levels_off": result.soak.memory_levels_off,
        "churn": asdict(result.churn),
        "faults": [
            {**asdict(f), "errors": f.errors, "failures": f.failures, "passed": f.passed}
            for f in result.faults
        ],
        "restart": {
            "window": {**asdict(restart.window), "errors": restart.window.errors},
            "stop_s": restart.stop_s,
            "start_s": restart.start_s,
            "differences": restart.differences,
            "before": asdict(restart.before),
            "failures": restart.failures,
            "passed": restart.passed,
        },
        "per_second": [asdict(bucket) for bucket in seconds],
        "memory": [asdict(sample) for sample in result.memory],
        "fuzz": fuzz_data(result.fuzz),
    }


def fuzz_data(fuzz: FuzzSummary | None) -> dict[str, Any] | None:
    """Return the hostile requests' figures, or None when none were sent."""
    if fuzz is None:
        return None
    return {**asdict(fuzz), "passed": fuzz.passed}


INTRODUCTION = """\
`ecrs faults` builds a private stack in `<state-dir>/faults` (generated shop
data: 2,000 users, 1,000 items, 40,000 interactions; small models; free
loopback ports) and keeps requests to `recommend_ensemble` in flight from
8 threads from start to end: 80% known users, 20% new users. It runs, in
order:

1. a soak (30 minutes; 3 with `--short`) while a catalogue thread adds 10
   items, removes 10 and records 20 interactions every 2 s;
2. `kill -9` of Redis, 10 s down, restart of Redis alone;
3. `kill -9` of Milvus, 10 s down, restart of Milvus alone;
4. `kill -9` of the `deepfm_rank` stub process;
5. Redis `CLIENT PAUSE` for 8 s, longer than the 2 s store timeout, while
   a ninth client sends requests one after another with a 0.5 s deadline;
6. a stop and start of the whole stack, comparing users, items,
   interactions, collection rows, the serving version, the loaded model
   versions and 13 users' recommendations before and after;
7. without `--short`, 3,000 hostile requests to each of the 8 served models.

CI runs `--short` as `tests/integration/test_faults.py` on the test's own
small models."""


def pass_rules() -> str:
    """Return the paragraph that states when each part of the suite passes."""
    plan = SuitePlan(soak_s=0.0)
    return f"""\
Each fault passes when no request failed in the {plan.settle_s:.0f} s of quiet
before it (counted from the end of the previous window), the fault showed
(requests failed or a new process replaced a killed one), every failed
request during it was UNAVAILABLE and named the dependency, the last failure
ended within the recovery bound after the repair, and no other server
restarted. Each window is observed for at least its recovery bound plus
{PAST_BOUND_S:.0f} s, so that a late error shows. The pause also needs every
failed request to fail within {PAUSED_ERROR_BOUND_S:.0f} s and every
deadline-bound request to end within {DEADLINE_SLACK_S} s of its deadline, as
a success, DEADLINE_EXCEEDED or UNAVAILABLE. The full restart passes with no
error in its quiet time, serving back within {plan.restart_bound_s:.0f} s of
the servers being ready, and equal snapshots. While it runs, the clients'
own connection errors (UNAVAILABLE, naming no store) and Triton's NOT_FOUND
"Request for unknown model", while it unloads models on its way down, are
the expected errors; the ECRS client reports both as UNAVAILABLE. The soak
passes with zero errors and memory that levels off. The command exits with
1 when any bound is missed."""


def write_report(result: SuiteResult, page: Path) -> list[Path]:
    """Write ``page`` (Markdown) and its ``.json`` and ``.png`` beside it."""
    page = Path(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    data = result_data(result)
    data_path = page.with_suffix(".json")
    data_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    figure_path = page.with_suffix(".png")
    write_figure(data, figure_path)
    page.write_text(format_page(data, figure_path.name), encoding="utf-8")
    return [page, data_path, figure_path]


def write_figure(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = data["per_second"]
    times = [bucket["second"] / 60 for bucket in seconds]
    figure, (requests, latency, memory) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True
    )
    requests.plot(times, [b["ok"] for b in seconds], lw=0.7, label="succeeded")
    requests.plot(
        times,
        [sum(b["errors"].values()) for b in seconds],
        lw=0.7,
        color="red",
        label="failed",
    )
    windows = [*data["faults"], data["restart"]["window"]]
    for number, fault in enumerate(windows, start=1):
        start, end = fault["injected_s"] / 60, fault["end_s"] / 60
        requests.axvspan(start, end, color="orange", alpha=0.2)
        requests.annotate(
            str(number),
            ((start + end) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    requests.set_ylabel("requests / s")
    requests.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    latency.plot(times, [b["p99_ms"] for b in seconds], lw=0.7)
    latency.set_ylabel("p99 latency (ms)")
    latency.set_yscale("log")
    memory.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for label in sorted({key for s in data["memory"] for key in s["rss_mib"]}):
        points = [(s["at_s"] / 60, s["rss_mib"].get(label)) for s in data["memory"]]
        memory.plot([p[0] for p in points], [p[1] for p in points], lw=0.8, label=label)
    memory.plot(
        [s["at_s"] / 60 for s in data["memory"]],
        [s["shm_mib"] for s in data["memory"]],
        lw=0.8, ls="--", color="black", label="/dev/shm",
    )  # fmt: skip
    memory.set_ylabel("resident memory (MiB)")
    memory.set_xlabel("minutes since the load started (shaded: faults)")
    # Outside the axes, so that it covers no line.
    memory.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_page(data: dict[str, Any], figure_name: str) -> str:
    soak = data["soak"]
    plan = data["plan"]
    host = data["machine"]
    lines = [
        "# Fault suite",
        "",
        INTRODUCTION,
        "",
        pass_rules(),
        "",
        (
            f"Result of the run below: **{'passed' if data['passed'] else 'FAILED'}**. "
            f"{data['requests']:,} requests at concurrency {plan['concurrency']} over "
            f"{data['duration_s'] / 60:.1f} minutes, on {host['date'][:10]}, on a "
            f"machine with {host['cores']} cores and {host['memory_gib']} GiB shared "
            f"with other jobs (load average {host['load_average'][0]} at the end)."
        ),
        "",
        f"![requests, p99 latency and memory over time]({figure_name})",
        "",
        (
            "The shaded windows are the faults: 1 to 4 are items 2 to 5 of the "
            "list above, and 5 is the full restart."
        ),
        "",
        "## Soak",
        "",
        (
            f"{soak['end_s'] / 60:.1f} minutes of known users, new users and "
            f"catalogue changes: {soak['requests']:,} requests, "
            f"{sum(soak['errors_by_status'].values())} errors, p50 {soak['p50_ms']} ms, "
            f"p99 {soak['p99_ms']} ms. Catalogue: {data['churn']['items_added']} items "
            f"added, {data['churn']['items_removed']} removed, {data['churn']['events']} "
            f"interactions recorded, {len(data['churn']['errors'])} failed rounds."
        ),
        "",
        (
            "Resident memory over the soak's second half (bound: growth of at most "
            f"{RSS_GROWTH_SHARE:.0%} or {RSS_GROWTH_MIN_MIB:.0f} MiB, whichever is "
            f"larger; shared memory at most {SHM_GROWTH_MAX_MIB:.0f} MiB):"
        ),
        "",
        "| process | mid-soak MiB | end MiB | growth MiB | bound MiB |",
        "|---|---|---|---|---|",
    ]
    for label, growth in soak["rss_growth_mib"].items():
        lines.append(
            f"| {label} | {soak['rss_mid_mib'][label]} | {soak['rss_end_mib'][label]} "
            f"| {growth} | {soak['rss_bound_mib'][label]} |"
        )
    lines.append(
        f"| /dev/shm | | | {soak['shm_growth_mib']} | {SHM_GROWTH_MAX_MIB:.0f} |"
    )
    lines += ["", "## Faults", "", *fault_table(data), ""]
    lines += restart_lines(data["restart"])
    lines += fuzz_lines(data["fuzz"])
    if "cpu" in host:  # pages of runs before the CPU was recorded have none
        lines += ["", "## Machine and versions", "", format_machine(host).rstrip("\n")]
    return "\n".join(lines) + "\n"


def fuzz_lines(fuzz: dict[str, Any] | None) -> list[str]:
    if fuzz is None:
        return []
    lines = [
        "",
        "## Hostile requests",
        "",
        "| model | cases | answered | INVALID_ARGUMENT | NOT_FOUND | other |",
        "|---|---|---|---|---|---|",
    ]
    for result in fuzz["results"]:
        statuses = result["statuses"]
        lines.append(
            f"| {result['model']} | {result['cases']} | {statuses.get('OK', 0)} | "
            f"{statuses.get('INVALID_ARGUMENT', 0)} | {statuses.get('NOT_FOUND', 0)} | "
            f"{result['unexpected_count']} |"
        )
    lines.append("")
    lines.append(
        f"Stub processes replaced during the requests: {fuzz['replaced'] or 'none'}; "
        f"models not ready after them: {fuzz['not_ready'] or 'none'}."
    )
    for result in fuzz["results"]:
        lines += [
            f"- {result['model']}: `{text[:300]}`" for text in result["unexpected"]
        ]
    return lines


def fault_table(data: dict[str, Any]) -> list[str]:
    lines = [
        (
            "| fault | errors before it | errors (all UNAVAILABLE naming it?) | "
            "slowest error s | recovery s (bound) | errors after the bound | others "
            "restarted | processes replaced | passed |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for fault in data["faults"]:
        named = (
            "yes"
            if fault["unexpected_count"] == 0
            else f"no: {fault['unexpected_count']}"
        )
        lines.append(
            f"| {fault['name']} | {fault['errors_before_fault']} | "
            f"{fault['errors']} ({named}) | "
            f"{fault['max_error_latency_s']} | {fault['recovery_s']} "
            f"({fault['recovery_bound_s']:.0f}) | {fault['errors_after_recovery']} | "
            f"{', '.join(fault['restarted']) or 'none'} | "
            f"{'; '.join(fault['replaced']) or 'none'} | "
            f"{verdict(fault)} |"
        )
    lines += deadline_lines(data["faults"])
    lines += failures_per_second_lines(
        [*data["faults"], data["restart"]["window"]], data["per_second"]
    )
    for fault in data["faults"]:
        for error in fault["unexpected_errors"]:
            lines.append(f"\n- {fault['name']}: unexpected `{error[:300]}`")
    return lines


# Seconds shown before each fault and after the end of its last failure.
MARGIN_S = 3


def failures_per_second_lines(
    windows: list[dict[str, Any]], seconds: list[dict[str, Any]]
) -> list[str]:
    """List the failed requests of each second around each fault window."""
    failed = {bucket["second"]: sum(bucket["errors"].values()) for bucket in seconds}
    lines = [
        "",
        (
            f"Failed requests per second, from {MARGIN_S} s before each fault to "
            f"{MARGIN_S} s after its last failure, each counted in the second it "
            "started, so a request sent just before a fault and failed by it shows "
            "before the `^`. `^` marks the second the fault began and `+` the "
            "second it was repaired:"
        ),
        "",
    ]
    for window in windows:
        injected = int(window["injected_s"])
        repaired = int(window["repaired_s"])
        last = int(window["repaired_s"] + window["recovery_s"]) + MARGIN_S
        counts = []
        for second in range(injected - MARGIN_S, max(last, repaired + MARGIN_S) + 1):
            began = "^" if second == injected else ""
            ended = "+" if second == repaired else ""
            counts.append(f"{began}{ended}{failed.get(second, 0)}")
        lines.append(f"- {window['name']}: `{' '.join(counts)}`")
    return lines


def deadline_lines(faults: list[dict[str, Any]]) -> list[str]:
    """Describe the requests sent with a short client deadline during a fault."""
    lines = []
    for fault in faults:
        check = fault.get("deadline")
        if check is None:
            continue
        lines += [
            "",
            (
                f"Client deadlines ({fault['name']}): {check['requests']} requests "
                f"sent one after another with a {check['deadline_s']} s deadline "
                f"ended in at most {check['max_latency_s']} s, as {check['statuses']}."
            ),
        ]
    return lines


def restart_lines(restart: dict[str, Any]) -> list[str]:
    window = restart["window"]
    counts = restart["before"]["counts"]
    lines = [
        "## Full restart",
        "",
        (
            f"The whole stack stopped in {restart['stop_s']} s and started in "
            f"{restart['start_s']} s. Before the stop it held {counts}, collections "
            f"{restart['before']['collections']}, serving version "
            f"{restart['before']['serving_version']}."
        ),
        "",
        (
            f"After the start: {'the same' if not restart['differences'] else 'DIFFERENT'} "
            "stores, versions and recommendations of the sample users; serving was back "
            f"{window['recovery_s']} s after the servers were ready, with "
            f"{window['errors_after_recovery']} errors after the "
            f"{window['recovery_bound_s']:.0f} s bound."
        ),
        "",
        (
            f"Errors: {window['errors_before_fault']} in the quiet time before the "
            f"stop; {window['errors']} of {window['requests']} requests from the stop "
            f"to the end of the window, by status {window['errors_by_status']}."
        ),
    ]
    lines += [f"- {difference}" for difference in restart["differences"]]
    lines += [
        f"- unexpected `{error[:300]}`" for error in window["unexpected_errors"]
    ]
    lines += ["", f"Restart passed: {verdict(restart)}."]
    return lines


def verdict(judged: dict[str, Any]) -> str:
    """Return "yes", or "NO" and the checks that failed."""
    if judged["passed"]:
        return "yes"
    return f"NO: {'; '.join(judged['failures'])}"
