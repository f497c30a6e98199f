"""Static checks of docker-compose.yml and its GPU override.

No Docker engine runs here, so these tests read the files: their structure,
pinned images, health checks gating the start order, named volumes, ports on
127.0.0.1 only, and the paths they mount.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ecrs.config import DEFAULT_STATE_DIR, StackConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "docker-compose.gpu.yml"
SERVERS = ("redis", "etcd", "minio", "milvus", "triton")
# Container paths under the state folder that 'ecrs export' and 'ecrs data'
# write on the host; they exist only after an export.
STATE_PATHS = {
    f"./{DEFAULT_STATE_DIR}/model_repository",
    f"./{DEFAULT_STATE_DIR}/data",
}
LOOPBACK_PORT = re.compile(r"^127\.0\.0\.1:\d+:\d+$")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """Return (host path, container path) of each bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_compose_has_every_service(services):
    assert set(services) == {*SERVERS, "loader"}


def test_images_pinned_by_tag(services):
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no tag"
        assert tag not in ("", "latest"), f"{name}: image {image!r} is not pinned"


def test_triton_image_is_ngc_24_10():
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile
    assert '"numpy<2"' in dockerfile
    assert '"pandas<3"' in dockerfile


def test_servers_have_health_checks(services):
    for name in SERVERS:
        check = services[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] == "CMD"
        assert check["retries"] > 0


def test_servers_restart_after_a_crash(services):
    for name in SERVERS:
        assert services[name].get("restart") == "unless-stopped", name


def test_start_order_waits_for_health(services):
    expected = {
        "milvus": {"etcd", "minio"},
        "triton": {"redis", "milvus"},
        "loader": {"redis", "milvus", "triton"},
    }
    for name, dependencies in expected.items():
        depends_on = services[name]["depends_on"]
        assert set(depends_on) == dependencies
        for dependency in dependencies:
            assert depends_on[dependency]["condition"] == "service_healthy"


def test_published_ports_bind_loopback(services):
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert LOOPBACK_PORT.match(port), f"{name}: port {port!r} not on 127.0.0.1"
            published.setdefault(name, []).append(int(port.split(":")[1]))
    assert set(published) == {"redis", "milvus", "triton"}


def test_published_ports_match_local_stack(services):
    ports = StackConfig(state_dir=Path(DEFAULT_STATE_DIR)).ports
    host_ports = {
        name: {int(port.split(":")[1]) for port in services[name]["ports"]}
        for name in ("redis", "milvus", "triton")
    }
    assert host_ports["redis"] == {ports.redis}
    assert host_ports["milvus"] == {ports.milvus}
    assert host_ports["triton"] == {
        ports.triton_http,
        ports.triton_grpc,
        ports.triton_metrics,
    }


def test_store_data_lives_in_named_volumes(compose, services):
    declared = set(compose["volumes"])
    expected = {
        "redis": "/data",
        "etcd": "/etcd",
        "minio": "/minio_data",
        "milvus": "/var/lib/milvus",
    }
    for name, target in expected.items():
        named = [
            volume.split(":")
            for volume in services[name]["volumes"]
            if not volume.startswith((".", "/"))
        ]
        assert [volume_target for _, volume_target in named] == [target]
        assert named[0][0] in declared


def test_mounted_paths_exist(services):
    for name, service in services.items():
        for source, _ in bind_mounts(service):
            if source in STATE_PATHS:
                continue
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    build = services["triton"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_state_mounts_are_where_export_writes(services):
    state = StackConfig(state_dir=Path(DEFAULT_STATE_DIR))
    triton = dict(bind_mounts(services["triton"]))
    assert triton == {f"./{state.model_repository}": "/models"}


def test_triton_serves_writable_repository_explicitly(services):
    triton = services["triton"]
    assert "--model-control-mode=explicit" in triton["command"]
    assert "--model-repository=/models" in triton["command"]
    mount = next(v for v in triton["volumes"] if v.split(":")[1] == "/models")
    assert not mount.endswith(":ro")
    assert triton["shm_size"]


def test_loader_is_one_shot_with_store_settings(services):
    loader = services["loader"]
    assert loader["profiles"] == ["tools"]
    assert loader["command"][:2] == ["ecrs", "load"]
    assert loader["environment"] == services["triton"]["environment"]
    assert loader["environment"]["ECRS_REDIS_URL"] == "redis://redis:6379/0"
    assert loader["environment"]["ECRS_MILVUS_URI"] == "http://milvus:19530"


def test_secrets_come_from_environment(services):
    redis = services["redis"]
    triton = services["triton"]["environment"]
    assert redis["environment"]["ECRS_REDIS_PASSWORD"].startswith(
        "${ECRS_REDIS_PASSWORD:?"
    )
    assert triton["ECRS_REDIS_PASSWORD"] == "${ECRS_REDIS_PASSWORD}"
    assert triton["ECRS_MILVUS_TOKEN"].startswith("${ECRS_MILVUS_TOKEN:?")
    assert "requirepass" in " ".join(redis["command"])
    for name, service in services.items():
        text = yaml.safe_dump(service)
        assert "minioadmin" not in text, f"{name} has MinIO's default password"


def test_gpu_override_reserves_gpu_for_triton():
    override = load(GPU_OVERRIDE)
    assert set(override["services"]) == {"triton"}
    devices = override["services"]["triton"]["deploy"]["resources"]["reservations"][
        "devices"
    ]
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
