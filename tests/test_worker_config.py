"""worker.py's settings that used to get past its start (found by a probe of bad inputs): each is
refused at start with exit 2 and a message naming it, and a worker the server refuses to serve
stops the process instead of leaving it up without polling."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion

from starter.payload_store import PayloadStoreConfig, PayloadStoreConfigError
from tests.test_worker_slots import _worker_refuses
from tests.workflows.support import unique
from worker import build_worker, deployment_from_env, run_workers, shutdown_grace_from_env


@pytest.mark.parametrize(("value", "seconds"), [("", 30.0), ("0", 0.0), (" 2.5 ", 2.5), ("86400", 86_400.0)])
def test_the_shutdown_grace_is_a_number_of_seconds(value: str, seconds: float) -> None:
    assert shutdown_grace_from_env({"WORKER_SHUTDOWN_GRACE_S": value}) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-5", "1e15", "86401"])
def test_a_shutdown_grace_that_cannot_work_is_refused(value: str) -> None:
    with pytest.raises(
        ValueError, match="WORKER_SHUTDOWN_GRACE_S must be a number of seconds from 0 to 86400"
    ):
        shutdown_grace_from_env({"WORKER_SHUTDOWN_GRACE_S": value})


def test_the_worker_refuses_a_bad_shutdown_grace_at_start() -> None:
    # Before, float("abc") ended the worker with a traceback (exit 1).
    _worker_refuses("WORKER_SHUTDOWN_GRACE_S", "abc", "WORKER_SHUTDOWN_GRACE_S must be a number of seconds")


@pytest.mark.parametrize(
    ("name", "build", "message"),
    [
        ("bad.name", "b1", "cannot contain '.' or ':'"),
        ("a:b", "b1", "cannot contain '.' or ':'"),
        ("__wfa", "b1", "WFA_DEPLOYMENT_NAME must be at most 255 characters and not start with '__'"),
        ("wfa", "__b1", "WFA_BUILD_ID must be at most 255 characters and not start with '__'"),
        ("w" * 256, "b1", "WFA_DEPLOYMENT_NAME must be at most 255 characters"),
        ("wfa", "b" * 256, "WFA_BUILD_ID must be at most 255 characters"),
    ],
)
def test_a_deployment_temporal_would_refuse_is_refused_at_start(name: str, build: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        deployment_from_env({"WFA_DEPLOYMENT_NAME": name, "WFA_BUILD_ID": build})


def test_a_deployment_temporal_takes_is_taken() -> None:
    found = deployment_from_env({"WFA_DEPLOYMENT_NAME": "wfa/blue_1", "WFA_BUILD_ID": "2026-12-01.3"})
    assert found == WorkerDeploymentVersion(deployment_name="wfa/blue_1", build_id="2026-12-01.3")


def test_the_worker_refuses_a_bad_deployment_name_at_start() -> None:
    # Before, the worker started, the server refused its first poll a minute later, and the
    # process stayed up for ever without polling (SIGTERM did not end it either).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WFA_BUILD_ID", "b1")  # the subprocess's environment is this one's
        _worker_refuses("WFA_DEPLOYMENT_NAME", "bad.name", "WFA_DEPLOYMENT_NAME cannot contain '.' or ':'")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"WFA_PAYLOAD_STORE": "postgres:notaurl"}, "WFA_PAYLOAD_STORE: not a database URL: 'notaurl'"),
        (
            {"WFA_PAYLOAD_STORE": "postgres:mysql://x/y"},
            "WFA_PAYLOAD_STORE: the store needs PostgreSQL, not 'mysql'",
        ),
        (
            {"WFA_PAYLOAD_STORE": "postgres", "DATABASE_URL": "nope"},
            "DATABASE_URL: not a database URL: 'nope'",
        ),
        # make_url raises a plain ValueError for these (a review found wfa ending with exit 70):
        (
            {"WFA_PAYLOAD_STORE": "postgres:postgresql://u:p@h:notaport/db"},
            "WFA_PAYLOAD_STORE: not a database URL",
        ),
        (
            {"WFA_PAYLOAD_STORE": "postgres:postgresql://u:p@h1:5432,h2:5432/db"},
            "WFA_PAYLOAD_STORE: not a database URL",
        ),
    ],
)
def test_a_payload_store_url_that_is_not_postgresql_is_refused(
    settings: dict[str, str], message: str
) -> None:
    with pytest.raises(PayloadStoreConfigError, match=message.replace("(", r"\(")):
        PayloadStoreConfig.from_env(settings)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://wfa:p%40ss@db.internal:5432/wfa?ssl=require",
        "postgresql:///wfa?host=/var/run/postgresql",
        "postgres://wfa@[::1]:5432/wfa",
    ],
)
def test_valid_postgresql_urls_are_taken(url: str) -> None:
    found = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": f"postgres:{url}"})
    assert found is not None
    assert found.location == url


def test_a_payload_store_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "blobs"
    file.write_text("not a directory")
    with pytest.raises(PayloadStoreConfigError, match="is not a directory"):
        PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": f"fs:{file}"})
    assert PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": f"fs:{tmp_path}/new"}) is not None  # made later


def test_the_worker_refuses_a_payload_store_url_at_start() -> None:
    # Before, the worker started and failed every workflow task that stored a payload
    # (StoreError when encoding the completion), retried for ever.
    _worker_refuses("WFA_PAYLOAD_STORE", "postgres:notaurl", "WFA_PAYLOAD_STORE: not a database URL")


async def test_a_worker_the_server_refuses_stops_the_process(client: Client) -> None:
    """A worker whose polls the server refuses (a deployment name built past the start's check)
    fails; :func:`worker.run_workers` then returns exit code 1 instead of waiting for ever for a
    shutdown the SDK never finishes (its poller loops do not stop)."""
    stop = asyncio.Event()
    failures: list[BaseException] = []

    async def failed(err: BaseException) -> None:
        failures.append(err)
        stop.set()

    async with httpx.AsyncClient() as http:
        refused = build_worker(
            client,
            unique("tq-refused"),
            http,
            deployment=WorkerDeploymentVersion(deployment_name="bad.name", build_id="b1"),
            graceful_shutdown_timeout=timedelta(0),
            on_fatal_error=failed,
        )
        # Bounded only so that a regression fails instead of hanging the suite.
        code = await asyncio.wait_for(run_workers([refused], stop, timedelta(0), failures), timeout=600)
    assert code == 1
    assert failures, "the SDK reported no fatal error"
    assert stop.is_set()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"WFA_PAYLOAD_STORE_THRESHOLD": "abc"}, "WFA_PAYLOAD_STORE_THRESHOLD"),
        ({"WFA_PAYLOAD_STORE_STATE_BUDGET": "-1"}, "WFA_PAYLOAD_STORE_STATE_BUDGET"),
        ({"WFA_PAYLOAD_STORE": "off", "WFA_PAYLOAD_STORE_THRESHOLD": "1.5"}, "WFA_PAYLOAD_STORE_THRESHOLD"),
    ],
)
def test_a_malformed_store_setting_is_refused_without_a_store_too(
    settings: dict[str, str], named: str
) -> None:
    # Before, these were read only when a store was set: a typo waited for the day one was.
    with pytest.raises(PayloadStoreConfigError, match=named):
        PayloadStoreConfig.from_env(settings)
    assert (
        PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE_THRESHOLD": "1000"}) is None
    )  # well formed: no store


def test_the_store_configuration_does_not_show_a_password() -> None:
    config = PayloadStoreConfig.from_env({"WFA_PAYLOAD_STORE": "postgres:postgresql://wfa:s3cret@db/wfa"})
    assert config is not None
    assert "s3cret" not in repr(config)
    assert config.location == "postgresql://wfa:s3cret@db/wfa"  # still there for the driver


@pytest.mark.parametrize(
    ("variable", "value"), [("WFA_INPUT_CHECK_DEADLINE", "forever"), ("WFA_INPUT_CHECK_SLOTS", "0")]
)
def test_the_worker_refuses_a_malformed_input_check_setting_at_start(variable: str, value: str) -> None:
    _worker_refuses(variable, value, f"{variable}: {value!r} is not a")
