"""Write a benchmark run as a Markdown page, a JSON copy and a PNG plot.

For a page ``docs/benchmark.md`` the JSON copy is ``docs/benchmark.json`` and
the plot ``docs/benchmark.png``. The page is generated from the JSON
figures alone (``format_page``), so it can be rewritten from the JSON file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecrs.errors import ConfigError
from ecrs.serving.stages import STAGES, TOTAL, USER_TOWER, VECTOR_SEARCH, RANKING
from ecrs.stack.machine import format_machine

# The catalogue size the targets are set for.
TARGET_ITEMS = 100_000
MIB = 1024 * 1024


OTHER_LEVERS = """\
- Milvus consistency level: the index tables measure Eventually beside
  Bounded, the level serving uses. Strong waits for Milvus's time tick on every
  search, so it was not considered.
- Reading search results: serving reads the ids and scores of Milvus's reply
  directly; the index tables compare it with `MilvusClient.search`.
- `async_exec`: the stages of one request depend on each other in order (user
  row, user vector, search, item rows, scores), so a request has nothing to
  overlap. Requests overlap through the instances of `recommend_ensemble`
  (the instance rows of the lever table), and the BLS calls stay synchronous.
- Pipelined Redis reads: a known user's features and recent items come in one
  pipelined round trip and the candidates' features in one `MGET`; with the
  item cache, only the candidates not cached are read, after one `GET` of the
  item generation.
- Open connections: each model instance keeps its Redis connection pool and
  its Milvus gRPC channel open across requests; perf_analyzer and the
  reference keep theirs open too.
"""


def report_paths(page: Path) -> tuple[Path, Path]:
    """Return the JSON copy's and the plot's paths for a page path."""
    if page.suffix != ".md":
        raise ConfigError(
            f"the report page {page} does not end in .md; pass a Markdown path "
            "such as docs/benchmark.md"
        )
    return page.with_suffix(".json"), page.with_suffix(".png")


def write_report(run: Mapping[str, Any], page: Path) -> list[Path]:
    """Write the page, its JSON copy and the plot; return the paths."""
    json_path, plot_path = report_paths(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    plot_sweeps(run, plot_path)
    page.write_text(format_page(run, plot_path.name, str(page)), encoding="utf-8")
    return [page, json_path, plot_path]


@dataclass(frozen=True)
class Target:
    """A goal of the report: the measured value against its threshold."""

    name: str
    value: float
    threshold: float
    higher_is_better: bool
    unit: str
    note: str = ""

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        if self.higher_is_better:
            return self.value >= self.threshold
        return self.value <= self.threshold

    def describe(self) -> str:
        if math.isnan(self.value):
            return "not measured"
        if self.met:
            return "met"
        gap = abs(self.value - self.threshold)
        text = f"missed by {gap:.2f} {self.unit}".rstrip()
        return f"{text}; {self.note}" if self.note else text


def by_concurrency(rows: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    return {int(row["concurrency"]): row for row in rows}


def target_size(run: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the size the targets apply to: 100,000 items, else the largest."""
    sizes = run["sizes"]
    exact = [size for size in sizes if size["items"] == TARGET_ITEMS]
    return exact[0] if exact else max(sizes, key=lambda size: size["items"])


def overhead_ms(size: Mapping[str, Any]) -> float:
    """Return Triton's p50 at concurrency 1 minus model compute and vector search.

    Model compute is the mean compute time Triton reports for user_tower and
    deepfm_rank; vector search is its stage p50. What remains is feature
    reads, encoding, marshalling and the BLS and gRPC hops.
    """
    first = by_concurrency(size["triton"]).get(1)
    if first is None:
        return math.nan
    models = first.get("models", {})
    compute = sum(model.get("compute_ms", 0.0) for model in models.values())
    search = first["stages"].get(VECTOR_SEARCH, {}).get("p50_ms", 0.0)
    return first["p50_ms"] - compute - search


def slowest_stage(size: Mapping[str, Any]) -> str:
    first = by_concurrency(size["triton"]).get(1)
    if first is None:
        return "no stages measured"
    stages = {k: v for k, v in first["stages"].items() if k != TOTAL}
    if not stages:
        return "no stages measured"
    name, figures = max(stages.items(), key=lambda item: item[1]["p50_ms"])
    return f"the largest stage is {name} ({figures['p50_ms']:.2f} ms p50)"


def targets(run: Mapping[str, Any]) -> list[Target]:
    size = target_size(run)
    triton = by_concurrency(size["triton"])
    reference = by_concurrency(size["reference"])
    first = triton.get(1, {})
    reference_first = reference.get(1, {})
    nan = math.nan
    within = [row for row in size["triton"] if row["p99_ms"] < 50]
    best = max(within, key=lambda row: row["throughput"]) if within else None
    held_back = slowest_stage(size)
    return [
        Target("p50 at concurrency 1", first.get("p50_ms", nan), 5.0, False, "ms", held_back),
        Target("p99 at concurrency 1", first.get("p99_ms", nan), 10.0, False, "ms", held_back),
        Target(
            "p50 over the reference's p50, concurrency 1",
            _ratio(first.get("p50_ms"), reference_first.get("p50_ms")),
            1.2,
            False,
            "",
            "BLS hops to user_tower and deepfm_rank",
        ),
        Target(
            "throughput with p99 < 50 ms",
            best["throughput"] if best else nan,
            300.0,
            True,
            "requests/s",
            held_back,
        ),
        Target(
            "that throughput over the reference's at concurrency 1 (one request "
            "after another in one process)",
            _ratio(best["throughput"] if best else None, reference_first.get("throughput")),
            1.5,
            True,
            "",
            "the CPU that the BLS hops and Triton's stubs add to every request, "
            "on the same 2 cores",
        ),
        Target(
            "recall@200 of the chosen index, lowest over sizes",
            min(s["index"]["chosen"]["recall"] for s in run["sizes"]),
            0.95,
            True,
            "",
        ),
        Target(
            "p50 outside model compute and vector search",
            overhead_ms(size),
            1.0,
            False,
            "ms",
            "see the stage table: feature reads, encoding and the BLS hops",
        ),
    ]


def _ratio(numerator: float | None, denominator: float | None) -> float:
    if not numerator or not denominator:
        return math.nan
    return numerator / denominator


def format_page(
    run: Mapping[str, Any], plot_name: str, page: str = "docs/benchmark.md"
) -> str:
    machine = run["machine"]
    settings = run["settings"]
    size = target_size(run)
    sections = [
        "# Serving benchmark\n",
        f"`recommend_ensemble` measured with perf_analyzer over gRPC on "
        f"{machine['date']}, against a reference pipeline that runs the same "
        "steps in one Python process. Written by `ecrs benchmark --report`; "
        "the same figures are in the JSON file beside this page.\n",
        "```sh\n" + command_line(run, page) + "\n```\n",
        f"## Targets ({size['items']:,} items)\n",
        "The targets are set for 100,000 items, except recall, which holds at "
        "every size; the other sizes' figures are in their sections.\n",
        targets_table(run),
        f"![Latency and throughput against concurrency]({plot_name})\n",
    ]
    for size_result in run["sizes"]:
        sections += size_sections(size_result)
    if any(size_result.get("levers") for size_result in run["sizes"]):
        sections += ["## Levers outside the lever table\n", OTHER_LEVERS]
    sections += [
        "## Method\n",
        method_text(settings),
        "## Machine and versions\n",
        format_machine(machine),
    ]
    return "\n".join(sections)


def command_line(run: Mapping[str, Any], page: str) -> str:
    """Return the command that measures what ``run`` measured."""
    settings = run["settings"]

    def joined(values: Sequence[Any]) -> str:
        return ",".join(str(value) for value in values)

    levers = [s["items"] for s in run["sizes"] if s.get("levers")]
    options = [
        ("--items", joined(settings["sizes"])),
        ("--concurrency", joined(settings["concurrencies"])),
        ("--users", settings["users"]),
        ("--interactions", settings["interactions"]),
        ("--dim", settings["dim"]),
        ("--requests", settings["requests"]),
        ("--measurement-ms", settings["measurement_ms"]),
        ("--reference-seconds", f"{settings['reference_seconds']:g}"),
        ("--ann-queries", settings["ann_queries"]),
        ("--seed", settings["seed"]),
        *([("--levers", joined(levers))] if levers else []),
        ("--report", page),
    ]
    lines = ["ecrs benchmark"] + [f"  {name} {value}" for name, value in options]
    return " \\\n".join(lines)


def targets_table(run: Mapping[str, Any]) -> str:
    lines = ["| target | value | goal | result |", "|---|---:|---:|---|"]
    for target in targets(run):
        goal = ("≥ " if target.higher_is_better else "≤ ") + f"{target.threshold:g}"
        value = "" if math.isnan(target.value) else f"{target.value:.2f}"
        unit = f" {target.unit}" if target.unit else ""
        lines.append(f"| {target.name} | {value}{unit} | {goal}{unit} | {target.describe()} |")
    return "\n".join(lines) + "\n"


def size_sections(size: Mapping[str, Any]) -> list[str]:
    items = size["items"]
    return [
        f"## {items:,} items\n",
        setup_text(size),
        "### Latency and throughput\n",
        sweep_table(size),
        "### Stages at concurrency 1\n",
        stage_table(size),
        "### Vector index\n",
        index_table(size),
        "### Memory\n",
        memory_table(size),
        *(["### Levers\n", levers_table(size)] if size.get("levers") else []),
    ]


def setup_text(size: Mapping[str, Any]) -> str:
    setup = size["setup"]
    return (
        f"Catalogue built (generated, trained) in {setup.get('catalogue_seconds', 0):.0f} s "
        f"and loaded into Redis and Milvus in {setup.get('load_seconds', 0):.0f} s.\n"
    )


def sweep_table(size: Mapping[str, Any]) -> str:
    reference = by_concurrency(size["reference"])
    lines = [
        "| concurrency | Triton req/s | p50 ms | p90 ms | p99 ms | reference req/s "
        "| p50 ms | p90 ms | p99 ms | req/s ratio | p50 ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in size["triton"]:
        ref = reference.get(int(row["concurrency"]))
        cells = [
            str(row["concurrency"]) + ("" if row.get("stable", True) else " *"),
            f"{row['throughput']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
        ]
        if ref:
            cells += [
                f"{ref['throughput']:.0f}",
                f"{ref['p50_ms']:.2f}",
                f"{ref['p90_ms']:.2f}",
                f"{ref['p99_ms']:.2f}",
                f"{row['throughput'] / ref['throughput']:.2f}",
                f"{row['p50_ms'] / ref['p50_ms']:.2f}",
            ]
        else:
            cells += [""] * 6
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nRatios are Triton over the reference at the same concurrency, and the "
        "reference's threads share one Python interpreter. A concurrency marked * "
        "had no three perf_analyzer windows that agreed, and its figures are "
        "those of the last three windows.\n"
    )
    return "\n".join(lines) + "\n" + note


def stage_table(size: Mapping[str, Any]) -> str:
    triton = by_concurrency(size["triton"]).get(1, {}).get("stages", {})
    reference = by_concurrency(size["reference"]).get(1, {}).get("stages", {})
    lines = [
        "| stage | Triton p50 ms | Triton mean ms | share | reference p50 ms | share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        ours, theirs = triton.get(stage), reference.get(stage)
        cells = [stage]
        cells += (
            [f"{ours['p50_ms']:.2f}", f"{ours['mean_ms']:.2f}", f"{ours['share']:.0%}"]
            if ours
            else ["", "", ""]
        )
        cells += [f"{theirs['p50_ms']:.2f}", f"{theirs['share']:.0%}"] if theirs else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    models = by_concurrency(size["triton"]).get(1, {}).get("models", {})
    notes = [
        f"{name} compute {figures['compute_ms']:.2f} ms and queue "
        f"{figures['queue_ms']:.2f} ms per request (Triton's counters)"
        for name, figures in models.items()
    ]
    text = "\n".join(lines) + "\n"
    if notes:
        text += (
            "\nUnder Triton, "
            + "; ".join(notes)
            + f". The {USER_TOWER} and {RANKING} stages add the BLS hop to those "
            f"models. Outside model compute and vector search: "
            f"{overhead_ms(size):.2f} ms of the {by_concurrency(size['triton'])[1]['p50_ms']:.2f} ms p50.\n"
        )
    return text


def index_table(size: Mapping[str, Any]) -> str:
    index = size["index"]
    chosen = index["chosen"]
    lines = [
        "| index and search | serving's settings | recall@200 | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for measured in index["measured"]:
        mark = " (chosen)" if measured == chosen else ""
        served = "yes" if measured["served"] else ""
        lines.append(
            f"| {measured['label']}{mark} | {served} | {measured['recall']:.3f} | "
            f"{measured['p50_ms']:.2f} | {measured['p99_ms']:.2f} |"
        )
    return (
        "\n".join(lines)
        + f"\n\nChosen: {chosen['label']}. Only rows with serving's settings "
        "(the search parameters serving derives for that index, and Bounded "
        "consistency) can be chosen; the others show what another setting "
        "would give. Of those, the fastest with recall@200 of at least "
        f"{index['min_recall']} wins, FLAT (exact) while it is within 10% of "
        f"the fastest. The load built {index['loaded_index']} before "
        "the study. The table's latencies are pymilvus's `MilvusClient.search`; "
        "serving reads the same search's reply without building a Python object "
        f"per hit, which took {index['serving_p50_ms']:.2f} ms p50 and "
        f"{index['serving_p99_ms']:.2f} ms p99 with the chosen index."
        + short_of_recall(index)
        + "\n"
    )


def short_of_recall(index: Mapping[str, Any]) -> str:
    """Name the index types none of whose configurations reached the recall goal."""
    best: dict[str, float] = {}
    for measured in index["measured"]:
        kind = measured["index_type"]
        best[kind] = max(best.get(kind, 0.0), measured["recall"])
    short = [kind for kind, recall in best.items() if recall < index["min_recall"]]
    if not short:
        return ""
    return (
        f" No configuration of {', '.join(short)} reached recall@200 of "
        f"{index['min_recall']} at this size (best: "
        + ", ".join(f"{best[kind]:.3f}" for kind in short)
        + "), so none could be chosen."
    )


def memory_table(size: Mapping[str, Any]) -> str:
    memory = size["memory"]
    idle = memory["rss_idle_bytes"]
    loaded = memory["rss_loaded_bytes"]
    after = memory.get("rss_after_bytes", {})
    lines = [
        "| server | resident MiB, empty | loaded | after the runs |",
        "|---|---:|---:|---:|",
    ]
    for server in loaded:
        lines.append(
            f"| {server} | {idle.get(server, 0) / MIB:.0f} | {loaded[server] / MIB:.0f} "
            f"| {after.get(server, 0) / MIB:.0f} |"
        )
    return (
        "\n".join(lines)
        + f"\n\nRedis: {memory['redis_bytes_per_item']:.0f} bytes per item key "
        f"(mean MEMORY USAGE of sampled keys); Milvus: "
        f"{memory['milvus_bytes_per_item']:.0f} bytes per item (growth of its "
        "resident memory from empty to loaded and indexed, so at small sizes "
        "the fixed cost of a loaded collection dominates it).\n"
    )


def levers_table(size: Mapping[str, Any]) -> str:
    """Tabulate each lever's p50 and throughput against the served configuration."""
    rows = size["levers"]
    concurrencies = [result["concurrency"] for result in rows[0]["results"]]
    header = "| configuration | " + " | ".join(
        f"c={c} req/s | c={c} p50 ms | c={c} p99 ms" for c in concurrencies
    )
    lines = [header + " |", "|---|" + "---:|" * (3 * len(concurrencies))]
    for row in rows:
        cells = []
        for result in row["results"]:
            cells += [
                f"{result['throughput']:.0f}",
                f"{result['p50_ms']:.2f}",
                f"{result['p99_ms']:.2f}",
            ]
        lines.append(f"| {row['lever']} | " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\nEach lever is the served configuration with one change, loaded "
        "through Triton's repository API and measured right after the served "
        "configuration, so compare rows with each other rather than with the "
        "sweep above.\n"
    )


def method_text(settings: Mapping[str, Any]) -> str:
    return (
        f"Each catalogue is generated shop data with {settings['users']:,} users and "
        f"{settings['interactions']:,} interactions, a model of "
        f"{settings['dim']}-dimensional vectors trained one epoch per tower, "
        "exported to ONNX and loaded into a private stack on loopback ports. "
        f"The {settings['requests']:,} requests are "
        f"{1 - settings['new_user_share']:.0%} known users by id and "
        f"{settings['new_user_share']:.0%} new users by their raw features, "
        f"top {settings['top_n']} of {settings['candidates']} candidates. "
        "perf_analyzer runs once per concurrency with "
        f"{settings['measurement_ms']} ms windows until three agree within "
        f"{settings['stability_percent']}%, and reports those. The reference runs "
        "the same handler (`RecommendModel`) with onnxruntime in place of the BLS "
        f"calls, in closed loops of {settings['reference_seconds']:g} s from as "
        "many threads as the concurrency. Stage figures under Triton come from "
        "the `ecrs_stage_duration_seconds` histograms scraped before and after "
        "each perf_analyzer run; their p50 is interpolated within buckets that "
        "grow by 25%, and the shares are means over the mean total. Recall@200 "
        f"compares Milvus with an exact numpy search for {settings['ann_queries']} "
        "users' vectors.\n"
    )


def plot_sweeps(run: Mapping[str, Any], path: Path) -> None:
    """Plot latency percentiles and throughput against concurrency, a row per size."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    sizes = run["sizes"]
    figure, axes = pyplot.subplots(
        len(sizes), 2, figsize=(11, 3.6 * len(sizes)), squeeze=False
    )
    for row, size in enumerate(sizes):
        latency_axis, throughput_axis = axes[row]
        for source, style in (("triton", "-"), ("reference", "--")):
            rows = sorted(size[source], key=lambda r: r["concurrency"])
            concurrency = [r["concurrency"] for r in rows]
            for percentile, color in (("p50", "C0"), ("p90", "C1"), ("p99", "C3")):
                latency_axis.plot(
                    concurrency,
                    [r[f"{percentile}_ms"] for r in rows],
                    style,
                    color=color,
                    marker="o",
                    label=f"{source} {percentile}",
                )
            throughput_axis.plot(
                concurrency,
                [r["throughput"] for r in rows],
                style,
                color="C2",
                marker="o",
                label=source,
            )
        latency_axis.set_title(f"{size['items']:,} items: latency")
        latency_axis.set_xlabel("concurrency")
        latency_axis.set_ylabel("ms")
        latency_axis.set_xscale("log", base=2)
        latency_axis.legend(fontsize=7, ncol=2)
        throughput_axis.set_title(f"{size['items']:,} items: throughput")
        throughput_axis.set_xlabel("concurrency")
        throughput_axis.set_ylabel("requests/s")
        throughput_axis.set_xscale("log", base=2)
        throughput_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
