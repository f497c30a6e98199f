"""Write a quality run as a Markdown page, a JSON copy and a PNG of training curves.

For a page ``docs/quality.md`` the JSON copy is ``docs/quality.json`` and the
plot ``docs/quality_training.png``; the page links the plot.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from ecrs.errors import ConfigError
from ecrs.evaluation.quality import QualityRun

PROTOCOL = """\
Per user, interactions are sorted by timestamp, ties by item id (as text);
the last max(1, round(0.2 n)) are held out and the rest train. Each method
ranks the catalogue without the user's training items. Recall@K is the share
of a user's held-out items in the top K; NDCG@K uses 0/1 relevance with the
ideal DCG over min(held-out, K) hits; both are averaged over users. Coverage
is the share of the catalogue in any top 10. DeepFM's AUC compares held-out
positives with one uniformly sampled negative each. Item KNN is cosine
similarity over all items; EASE's L2 regularization is tuned by NDCG@10 on
the last 20% of each user's training interactions. The two-stage method
re-ranks the two-tower model's top 200 unseen items by DeepFM's logit plus
the two-tower logit (similarity over temperature), as the server does."""

COLD_START_PROTOCOL = """Cold start: {share:.0%} of the users, drawn with a fixed seed, lose all their
interactions from training. A second pair of models is trained without them,
and they are served as new users from their raw features alone (no id, no
history). All of their interactions are the items to find, and nothing is
excluded, so these figures are not comparable with the held-out users'
(a cold-start user has about five times as many items to find)."""

MODEL_NAMES = {"two_tower": "two-tower", "deepfm": "DeepFM"}


def report_paths(page: Path) -> tuple[Path, Path]:
    """Return the JSON copy's and the plot's paths for a page path."""
    if page.suffix != ".md":
        raise ConfigError(
            f"the report page {page} does not end in .md; pass a Markdown path "
            "such as docs/quality.md"
        )
    return page.with_suffix(".json"), page.with_name(page.stem + "_training.png")


def check_report_folder(page: Path) -> None:
    """Create the page's folder and check that files can be written there.

    Called before a long evaluation, so that a bad path fails at once.
    """
    report_paths(page)
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=page.parent):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report into {page.parent} ({exc.strerror}); "
            "pass a --report path in a writable folder"
        ) from exc


def write_report(run: QualityRun, page: Path) -> list[Path]:
    """Write the page, its JSON copy and the training-curve plot; return the paths."""
    json_path, plot_path = report_paths(page)
    page.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(
        json.dumps(run.to_dict(), indent=2, allow_nan=True) + "\n", encoding="utf-8"
    )
    plot_training_curves(run.training, plot_path)
    page.write_text(format_page(run, plot_path.name), encoding="utf-8")
    return [page, json_path, plot_path]


def format_page(run: QualityRun, plot_name: str) -> str:
    dataset = run.dataset
    sections = [
        "# Recommendation quality\n",
        f"Data set `{dataset['name']}`: {dataset['users']} users, {dataset['items']} "
        f"items, {dataset['interactions']} interactions. Written by `ecrs evaluate "
        f"--report`; the same figures are in the JSON file beside this page.\n",
        "## Targets\n",
        targets_table(run),
        "## Held-out users\n",
        methods_table(run.main.methods),
        _main_notes(run),
    ]
    if run.cold_start is not None:
        sections += [
            "## Cold start\n",
            f"{run.cold_start_users} users trained on nothing, served as new users "
            f"(DeepFM AUC on them: {run.cold_start.deepfm_auc:.4f}). All of their "
            "interactions count, so compare these rows with each other, not with "
            "the held-out table.\n",
            methods_table(run.cold_start.methods),
        ]
    if run.served is not None:
        sections += ["## Served path\n", served_section(run)]
    sections += [
        "## Training\n",
        training_table(run.training),
        f"![Training loss per epoch]({plot_name})\n",
        "## Protocol\n",
        PROTOCOL + "\n",
        *(
            [COLD_START_PROTOCOL.format(share=run.settings["cold_start_share"]) + "\n"]
            if run.cold_start is not None
            else []
        ),
        "## Settings and machine\n",
        settings_list(run),
    ]
    return "\n".join(sections)


def targets_table(run: QualityRun) -> str:
    lines = ["| target | value | threshold | result |", "|---|---:|---:|---|"]
    for target in run.targets():
        value, threshold = (
            ("", "")
            if target.skipped
            else (f"{abs(target.value):.4f}", f"{abs(target.threshold):.4f}")
        )
        lines.append(f"| {target.name} | {value} | {threshold} | {target.describe()} |")
    return "\n".join(lines) + "\n"


def methods_table(methods: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(methods.values())))
    lines = [
        "| method | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for method, values in methods.items():
        cells = " | ".join(f"{values[name]:.4f}" for name in names)
        lines.append(f"| {method} | {cells} |")
    return "\n".join(lines) + "\n"


def served_section(run: QualityRun) -> str:
    served = run.served
    assert served is not None
    lines = [
        f"The two-stage answer requested through Triton for {served.users} users "
        f"(tritonclient over gRPC, `exclude_seen`, top 100) in {served.seconds:.1f} s, "
        "from a private stack loaded with the training interactions only.\n",
        "| metric | served | offline | difference |",
        "|---|---:|---:|---:|",
    ]
    for name, value in served.metrics.items():
        offline = served.offline[name]
        lines.append(f"| {name} | {value:.4f} | {offline:.4f} | {value - offline:+.4f} |")
    lines.append(
        f"\nLargest difference {served.max_difference:.4f}; the tolerance is "
        f"{served.tolerance}.\n"
    )
    return "\n".join(lines)


def training_table(training: dict[str, Any]) -> str:
    lines = ["| run | model | epochs | seconds |", "|---|---|---:|---:|"]
    for run_name, models in training.items():
        for model, record in models.items():
            lines.append(
                f"| {run_name} | {MODEL_NAMES.get(model, model)} | "
                f"{len(record['epoch_loss'])} | {record['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def settings_list(run: QualityRun) -> str:
    items = {**run.settings, **run.machine}
    return "\n".join(f"- {name}: {value}" for name, value in items.items()) + "\n"


def _main_notes(run: QualityRun) -> str:
    notes = [
        f"{run.main.users} users, {run.main.heldout} held-out interactions."
    ]
    if not math.isnan(run.main.deepfm_auc):
        notes.append(f"DeepFM AUC: {run.main.deepfm_auc:.4f}.")
    if run.main.ease_l2 is not None:
        notes.append(f"EASE L2 regularization chosen on validation: {run.main.ease_l2:g}.")
    return " ".join(notes) + "\n"


def plot_training_curves(training: dict[str, Any], path: Path) -> None:
    """Plot each model's mean loss per epoch, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    models = sorted({model for models in training.values() for model in models})
    figure, axes = pyplot.subplots(1, max(1, len(models)), figsize=(5 * max(1, len(models)), 3.5))
    axes = list(axes) if len(models) > 1 else [axes]
    for axis, model in zip(axes, models):
        for run_name, records in training.items():
            if model in records:
                losses = records[model]["epoch_loss"]
                axis.plot(range(1, len(losses) + 1), losses, marker="o", label=run_name)
        axis.set_title(f"{MODEL_NAMES.get(model, model)} training loss")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_ylabel("mean loss")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
