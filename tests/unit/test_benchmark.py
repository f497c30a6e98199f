"""The benchmark's parsing, summaries, request building and report, without servers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ecrs.benchmark import ann, metrics, report
from ecrs.benchmark.inputs import as_arrays, build_requests, write_input_data
from ecrs.benchmark.measures import stage_summary, summarize_latencies
from ecrs.benchmark.perf import parse_perf_csv, request_count
from ecrs.benchmark.reference import served_parameters
from ecrs.cli import main
from ecrs.commands import check_benchmark_sizes
from ecrs.errors import ConfigError
from ecrs.serving.stages import HISTOGRAM_BUCKETS_S, METRIC_FAMILY, STAGES
from ecrs.stores.vector_store import Index, default_search_params

# The header and a row as perf_analyzer 2.51 writes them with -f.
PERF_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,"
    "Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,"
    "Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    "1,66.3568,10,409,39,35,14203,332,7,14488,16909,18614,24702\n"
    "4,120.5,12,500,900,40,30000,400,8,33000,40000,45000,52000\n"
)


def test_perf_csv_rows_parse_to_milliseconds():
    first, second = parse_perf_csv(PERF_CSV)
    assert first.concurrency == 1
    assert first.latency.throughput == pytest.approx(66.3568)
    assert first.latency.p50_ms == pytest.approx(14.488)
    assert first.latency.p90_ms == pytest.approx(16.909)
    assert first.latency.p99_ms == pytest.approx(24.702)
    assert first.server_us["Server Compute Infer"] == 14203
    assert second.concurrency == 4
    assert second.latency.p99_ms == pytest.approx(52.0)


def test_request_count_from_console_output():
    output = (
        "Request concurrency: 1\n  Client: \n    Request count: 717\n"
        "    Throughput: 66.3568 infer/sec\n  Server: \n    Inference count: 720\n"
    )
    assert request_count(output) == 717
    assert request_count("no figures") == 0


def test_perf_csv_without_latency_columns_is_rejected():
    with pytest.raises(ValueError, match="p99 latency"):
        parse_perf_csv("Concurrency,Inferences/Second,p50 latency,p90 latency\n1,5,1,2\n")


def test_perf_csv_without_rows_is_rejected():
    with pytest.raises(ValueError, match="no rows"):
        parse_perf_csv(PERF_CSV.splitlines()[0] + "\n")


def histogram_text(
    model: str, stage: str, values_s: list[float], instance: str = "i0@1"
) -> str:
    """Render a stage histogram as Triton's metrics endpoint shows it."""
    labels = f'instance="{instance}",model="{model}",stage="{stage}",version="1"'
    lines = [f"# TYPE {METRIC_FAMILY} histogram"]
    for bound in [*HISTOGRAM_BUCKETS_S, math.inf]:
        count = sum(value <= bound for value in values_s)
        le = "+Inf" if math.isinf(bound) else repr(bound)
        lines.append(f'{METRIC_FAMILY}_bucket{{{labels},le="{le}"}} {count}')
    lines.append(f"{METRIC_FAMILY}_sum{{{labels}}} {sum(values_s)}")
    lines.append(f"{METRIC_FAMILY}_count{{{labels}}} {len(values_s)}")
    return "\n".join(lines) + "\n"


def test_stage_figures_from_histogram_text():
    values = [0.001 * (1 + i % 5) for i in range(100)]  # 1 to 5 ms
    text = histogram_text("recommend_ensemble", "vector_search", values)
    text += histogram_text("recommend_ensemble", "total", [v * 2 for v in values])
    text += histogram_text("rank_items", "total", [1.0])
    figures = metrics.stage_figures(metrics.parse_metrics(text), "recommend_ensemble")
    assert set(figures) == {"vector_search", "total"}
    search = figures["vector_search"]
    assert search.count == 100
    assert search.mean_ms == pytest.approx(3.0)
    # Buckets grow by 25%, so the interpolated median is within 25% of 3 ms.
    assert 3.0 / 1.25 <= search.p50_ms <= 3.0 * 1.25
    shares = metrics.stage_shares(figures)
    assert shares["vector_search"] == pytest.approx(0.5)
    assert shares["total"] == pytest.approx(1.0)


def test_stage_figures_add_up_instances():
    text = histogram_text("recommend_ensemble", "total", [0.001] * 30, "i0@1")
    text += histogram_text("recommend_ensemble", "total", [0.004] * 10, "i1@2")
    figures = metrics.stage_figures(metrics.parse_metrics(text), "recommend_ensemble")
    assert figures["total"].count == 40
    assert figures["total"].mean_ms == pytest.approx(1.75)
    # 30 of the 40 requests took 1 ms, so the median is in the 1 ms bucket.
    assert 1.0 / 1.25 <= figures["total"].p50_ms <= 1.0 * 1.25


def test_difference_of_scrapes_counts_new_samples_only():
    before = metrics.parse_metrics(
        histogram_text("recommend_ensemble", "total", [0.002] * 10)
    )
    after = metrics.parse_metrics(
        histogram_text("recommend_ensemble", "total", [0.002] * 10 + [0.010] * 30)
    )
    figures = metrics.stage_figures(metrics.difference(after, before), "recommend_ensemble")
    assert figures["total"].count == 30
    assert figures["total"].mean_ms == pytest.approx(10.0)


def test_histogram_quantile_interpolates_inside_bucket():
    buckets = [(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)]
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(1.5)
    assert math.isnan(metrics.histogram_quantile(0.5, []))


def test_histogram_quantile_in_inf_bucket_returns_largest_bound():
    buckets = [(1.0, 1.0), (math.inf, 10.0)]
    assert metrics.histogram_quantile(0.9, buckets) == 1.0


def test_model_compute_per_request():
    text = (
        'nv_inference_request_success{model="user_tower",version="1"} 4\n'
        'nv_inference_compute_infer_duration_us{model="user_tower",version="1"} 2000\n'
        'nv_inference_queue_duration_us{model="user_tower",version="1"} 800\n'
    )
    figures = metrics.model_compute_ms(metrics.parse_metrics(text), "user_tower")
    assert figures["requests"] == 4
    assert figures["compute_ms"] == pytest.approx(0.5)
    assert figures["queue_ms"] == pytest.approx(0.2)


def test_latency_summary_percentiles_and_throughput():
    latencies = [0.001 * (i + 1) for i in range(100)]
    summary = summarize_latencies(latencies, wall_s=2.0)
    assert summary.requests == 100
    assert summary.throughput == pytest.approx(50.0)
    assert summary.p50_ms == pytest.approx(50.5)
    assert summary.p99_ms == pytest.approx(99.01)


def test_latency_summary_without_requests_fails():
    with pytest.raises(ValueError, match="no requests"):
        summarize_latencies([], wall_s=1.0)


def test_stage_summary_shares_of_total():
    stages = {"vector_search": [0.002, 0.004], "total": [0.008, 0.008]}
    summary = stage_summary(stages)
    assert summary["vector_search"]["p50_ms"] == pytest.approx(3.0)
    assert summary["vector_search"]["share"] == pytest.approx(0.375)
    assert summary["total"]["share"] == pytest.approx(1.0)


def test_requests_mix_known_and_new_users(small_dataset):
    requests = build_requests(small_dataset, count=200, new_user_share=0.1, top_n=10)
    new = [r for r in requests if "USER_FEATURES" in r]
    known = [r for r in requests if "USER_ID" in r]
    assert len(new) == 20
    assert len(known) == 180
    active = set(small_dataset.interactions["user_id"].astype(str))
    assert {r["USER_ID"] for r in known} <= active
    feature_names = set(small_dataset.schema.users.feature_names)
    for request in new:
        assert set(json.loads(request["USER_FEATURES"])) <= feature_names
        assert "USER_ID" not in request
    assert all(r["TOP_N"] == 10 for r in requests)


def test_requests_spread_new_users_evenly(small_dataset):
    requests = build_requests(small_dataset, count=100, new_user_share=0.1, top_n=5)
    for start in range(0, 100, 10):
        window = requests[start : start + 10]
        assert sum("USER_FEATURES" in r for r in window) == 1


def test_input_data_file_has_one_entry_per_request(tmp_path, small_dataset):
    requests = build_requests(small_dataset, count=20, new_user_share=0.5, top_n=3)
    path = write_input_data(requests, tmp_path / "inputs.json")
    entries = json.loads(path.read_text())["data"]
    assert len(entries) == 20
    for entry, request in zip(entries, requests):
        assert entry == {name: [value] for name, value in request.items()}


def test_request_arrays_match_triton_types():
    arrays = as_arrays({"USER_ID": "u1", "TOP_N": 10})
    assert arrays["USER_ID"].dtype == np.object_
    assert arrays["USER_ID"].tolist() == [b"u1"]
    assert arrays["TOP_N"].dtype == np.int32
    assert arrays["TOP_N"].tolist() == [10]


def test_exact_top_finds_largest_inner_products():
    items = np.eye(5, dtype=np.float32)
    query = np.array([[0.1, 0.9, 0.0, 0.5, 0.2]], dtype=np.float32)
    (top,) = ann.exact_top(items, query, 2)
    assert top.hits([1, 3]) == 2
    assert top.hits([1, 4]) == 1
    assert top.hits([0, 2]) == 0


def test_exact_top_counts_tied_items_as_hits():
    items = np.array([[1.0, 0.0], [0.5, 0.0], [0.5, 0.0], [0.1, 0.0]], np.float32)
    (top,) = ann.exact_top(items, np.array([[1.0, 0.0]], np.float32), 2)
    assert top.hits([0, 2]) == 2
    assert top.hits([0, 1]) == 2
    assert top.hits([0, 1, 2]) == 2
    assert top.hits([0, 3]) == 1


def measurement(index_type, recall, p50, served=True):
    config = ann.SearchConfig(Index(index_type, {}, {}), {}, served=served)
    return ann.SearchMeasurement(config, recall, p50, p50 * 2)


def test_index_choice_prefers_flat_within_margin():
    flat = measurement("FLAT", 1.0, 4.2)
    hnsw = measurement("HNSW", 0.99, 4.0)
    assert ann.choose([flat, hnsw]) is flat


def test_index_choice_takes_faster_index_beyond_margin():
    flat = measurement("FLAT", 1.0, 9.0)
    hnsw = measurement("HNSW", 0.99, 4.0)
    assert ann.choose([flat, hnsw]) is hnsw


def test_index_choice_skips_low_recall_and_unserved():
    flat = measurement("FLAT", 1.0, 9.0)
    poor = measurement("IVF_FLAT", 0.5, 1.0)
    unserved = measurement("HNSW", 0.99, 2.0, served=False)
    assert ann.choose([flat, poor, unserved]) is flat


def test_candidate_configs_serve_with_default_parameters():
    groups = ann.candidate_configs(100_000, 200)
    for group in groups:
        served = [config for config in group if config.served]
        assert len(served) == 1
        index = served[0].index
        expected = default_search_params(
            {"index_type": index.index_type, **index.build_params}, 200
        )
        assert served[0].search_params == expected
        assert served[0].consistency == "Bounded"
    # IVF also runs with fewer and with more probes than serving uses.
    ivf = next(group for group in groups if group[0].index.index_type == "IVF_FLAT")
    probes = sorted(config.search_params["nprobe"] for config in ivf)
    assert probes[0] < 128 < probes[-1]


def size_result(items, p50=4.0, p99=8.0, throughput=400.0, recall=0.99):
    stages = {
        stage: {"p50_ms": 0.5, "mean_ms": 0.5, "share": 0.1, "count": 10}
        for stage in STAGES
    }
    triton = [
        {
            "concurrency": c,
            "throughput": throughput * c,
            "p50_ms": p50 * c,
            "p90_ms": p50 * c * 1.5,
            "p99_ms": p99 * c,
            "stages": stages,
            "models": {"user_tower": {"compute_ms": 0.2, "queue_ms": 0.1, "requests": 10}},
        }
        for c in (1, 4)
    ]
    reference = [
        {**row, "throughput": row["throughput"] / 2, "stages": stages} for row in triton
    ]
    chosen = {
        "label": "FLAT", "recall": recall, "p50_ms": 2.0, "p99_ms": 3.0,
        "index_type": "FLAT", "build_params": {}, "search_params": {},
        "consistency": "Bounded", "served": True,
    }  # fmt: skip
    return {
        "items": items,
        "setup": {"catalogue_seconds": 3.0, "load_seconds": 2.0},
        "index": {"min_recall": 0.95, "loaded_index": "FLAT", "chosen": chosen,
                  "measured": [chosen], "serving_p50_ms": 1.5,
                  "serving_p99_ms": 2.5},  # fmt: skip
        "triton": triton,
        "reference": reference,
        "memory": {
            "rss_idle_bytes": {"redis": 1 << 20},
            "rss_loaded_bytes": {"redis": 2 << 20},
            "redis_bytes_per_item": 180.0,
            "milvus_bytes_per_item": 400.0,
        },
        "levers": [
            {"lever": "served configuration",
             "results": [{"concurrency": 1, "throughput": 100.0, "p50_ms": 5.0,
                          "p90_ms": 6.0, "p99_ms": 7.0}]},
        ],  # fmt: skip
    }


def benchmark_run(*sizes):
    return {
        "settings": {
            "sizes": [size["items"] for size in sizes], "concurrencies": [1, 4],
            "users": 10, "interactions": 100, "dim": 16, "requests": 50,
            "new_user_share": 0.1, "top_n": 10, "candidates": 200,
            "measurement_ms": 1000, "stability_percent": 10,
            "reference_seconds": 1.0, "ann_queries": 20, "seed": 0,
        },  # fmt: skip
        "machine": {
            "cpu": "test CPU", "cores": 2, "python": "3.11", "system": "Linux",
            "date": "2026-01-01", "tritonserver": "2.51.0", "redis_server": "7",
            "milvus_server": "2.3.5", "versions": {"numpy": "1.26"},
        },  # fmt: skip
        "sizes": list(sizes),
    }


def test_targets_use_the_hundred_thousand_size():
    run = benchmark_run(size_result(10_000, p50=20.0), size_result(100_000, p50=4.0))
    by_name = {target.name: target for target in report.targets(run)}
    first = by_name["p50 at concurrency 1"]
    assert first.value == pytest.approx(4.0)
    assert first.met
    versus_reference = next(name for name in by_name if name.startswith("that throughput"))
    assert "concurrency 1" in versus_reference
    assert by_name[versus_reference].met


def test_missed_target_says_by_how_much():
    run = benchmark_run(size_result(100_000, p50=7.5))
    by_name = {target.name: target for target in report.targets(run)}
    target = by_name["p50 at concurrency 1"]
    assert not target.met
    assert target.describe().startswith("missed by 2.50 ms")


def test_recall_target_takes_the_lowest_size():
    run = benchmark_run(size_result(10_000, recall=0.9), size_result(100_000))
    by_name = {target.name: target for target in report.targets(run)}
    assert by_name["recall@200 of the chosen index, lowest over sizes"].value == 0.9


def test_page_lists_every_size_and_stage():
    run = benchmark_run(size_result(10_000), size_result(100_000))
    page = report.format_page(run, "benchmark.png")
    assert "## 10,000 items" in page
    assert "## 100,000 items" in page
    for stage in STAGES:
        assert f"| {stage} |" in page
    assert "![Latency and throughput against concurrency](benchmark.png)" in page
    assert "test CPU, 2 cores" in page
    assert "| served configuration |" in page


def test_report_writes_page_json_and_plot(tmp_path):
    run = benchmark_run(size_result(10_000))
    paths = report.write_report(run, tmp_path / "benchmark.md")
    assert [path.name for path in paths] == ["benchmark.md", "benchmark.json", "benchmark.png"]
    assert json.loads(paths[1].read_text()) == run
    assert paths[2].read_bytes().startswith(b"\x89PNG")


def test_report_path_must_be_markdown(tmp_path):
    with pytest.raises(Exception, match="does not end in .md"):
        report.report_paths(tmp_path / "benchmark.txt")


def test_reference_reads_served_parameters(exported):
    parameters = served_parameters(exported.repository)
    assert parameters.candidates == 200
    assert parameters.item_cache_items > 0


def test_command_line_names_lever_sizes():
    run = benchmark_run(size_result(10_000), size_result(100_000))
    run["sizes"][0]["levers"] = []
    command = report.command_line(run, "/tmp/run/page.md")
    assert "--items 10000,100000" in command
    assert "--levers 100000" in command
    assert "--measurement-ms 1000" in command
    # Every setting of the run is on the line, so the command repeats it.
    for option in ("--users", "--dim", "--requests", "--reference-seconds", "--seed"):
        assert option in command
    assert "--report /tmp/run/page.md" in command


def test_levers_outside_the_table_only_with_a_lever_table():
    run = benchmark_run(size_result(10_000))
    assert "Levers outside" in report.format_page(run, "plot.png")
    run["sizes"][0]["levers"] = []
    assert "Levers outside" not in report.format_page(run, "plot.png")


def test_index_type_short_of_recall_is_named():
    size = size_result(10_000)
    hnsw = {**size["index"]["chosen"], "label": "HNSW", "index_type": "HNSW"}
    size["index"]["measured"].append({**hnsw, "recall": 0.5, "served": True})
    text = report.index_table(size)
    assert "No configuration of HNSW reached recall@200 of 0.95" in text
    assert "best: 0.500" in text
    assert "FLAT reached" not in text


def test_index_table_marks_the_rows_serving_could_use():
    """A faster row with other search parameters is shown but not chosen,
    and the table marks which rows were candidates."""
    size = size_result(10_000)
    chosen = size["index"]["chosen"]
    faster = {**chosen, "label": "HNSW (ef=512)", "p50_ms": 0.1, "served": False}
    size["index"]["measured"].append(faster)
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in report.index_table(size).splitlines()
        if line.startswith("| ") and "recall@200" not in line
    }
    assert rows[f"{chosen['label']} (chosen)"] == "yes"
    assert rows["HNSW (ef=512)"] == ""


def test_benchmark_sizes_are_checked_before_the_run():
    check_benchmark_sizes([10_000, 100_000], [100_000], 200)
    with pytest.raises(ConfigError, match="--items lists 3000 more than once"):
        check_benchmark_sizes([3000, 3000], [], 200)
    with pytest.raises(ConfigError, match="--levers 5000 is not among --items 3000"):
        check_benchmark_sizes([3000], [5000], 200)
    with pytest.raises(ConfigError, match="--items 1, 150 is below 200, the candidates"):
        check_benchmark_sizes([1, 150, 2000], [], 200)


def test_benchmark_list_with_an_empty_entry_is_rejected(capsys):
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--items", "1000,,2000"])
    assert info.value.code == 2
    assert "'1000,,2000' has an empty entry" in capsys.readouterr().err


def test_unwritable_work_dir_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(
        ["--state-dir", str(tmp_path / "state"), "benchmark", "--items", "2000",
         "--work-dir", str(blocker / "work")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ecrs: error: the benchmark's work folder")
    assert str(blocker / "work") in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "state").exists()
