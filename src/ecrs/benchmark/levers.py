"""Measure serving settings one at a time against the served configuration.

Each lever changes the configuration of one or more models and reloads them
through Triton's repository API with the changed configuration (the
``config`` override of a load request), so the served repository on disk
stays as exported. The benchmark measures the served configuration first,
then each lever alone, restoring the served configuration after each.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import tritonclient.grpc as grpcclient

from ecrs.serving.layout import DEEPFM_RANK, RECOMMEND, USER_TOWER

logger = logging.getLogger(__name__)

ConfigChange = Callable[[dict], dict]


@dataclass(frozen=True)
class Lever:
    """A named change to the served configuration, by model."""

    name: str
    changes: Mapping[str, ConfigChange]


def set_parameter(name: str, value: str) -> ConfigChange:
    def change(config: dict) -> dict:
        config.setdefault("parameters", {})[name] = {"string_value": value}
        return config

    return change


def set_instances(count: int) -> ConfigChange:
    def change(config: dict) -> dict:
        for group in config.get("instance_group", []):
            group["count"] = count
        return config

    return change


def without_dynamic_batching(config: dict) -> dict:
    config.pop("dynamic_batching", None)
    return config


def set_queue_delay(microseconds: int) -> ConfigChange:
    def change(config: dict) -> dict:
        batching = config.setdefault("dynamic_batching", {})
        batching["max_queue_delay_microseconds"] = microseconds
        return config

    return change


ONNX = (USER_TOWER, DEEPFM_RANK)
LEVERS = (
    Lever("item cache off", {RECOMMEND: set_parameter("item_cache_items", "0")}),
    Lever(
        "ONNX models batch with a 200 us queue delay",
        {model: set_queue_delay(200) for model in ONNX},
    ),
    Lever(
        "no dynamic batching of the ONNX models",
        {model: without_dynamic_batching for model in ONNX},
    ),
    Lever("2 instances of each ONNX model", {model: set_instances(2) for model in ONNX}),
    Lever("2 instances of recommend_ensemble", {RECOMMEND: set_instances(2)}),
    Lever("8 instances of recommend_ensemble", {RECOMMEND: set_instances(8)}),
)


@contextmanager
def applied(url: str, lever: Lever) -> Iterator[None]:
    """Reload the lever's models with their changed configurations, then restore.

    The ONNX models load before recommend_ensemble, which calls them.
    """
    order = sorted(lever.changes, key=lambda model: model == RECOMMEND)
    with grpcclient.InferenceServerClient(url) as client:
        served = {
            model: client.get_model_config(model, as_json=True)["config"]
            for model in order
        }
        try:
            for model in order:
                changed = lever.changes[model](copy.deepcopy(served[model]))
                client.load_model(model, config=json.dumps(changed))
            logger.info("lever %r applied", lever.name)
            yield
        finally:
            for model in order:
                client.load_model(model, config=json.dumps(served[model]))
