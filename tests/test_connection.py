"""Connection from Temporal's environment configuration: profiles, overrides, TLS and mTLS.

The dev server speaks plaintext, so a TLS-terminating proxy on loopback (tests/helpers/tls.py)
stands in front of it with certificates generated here; the proxy records each handshake, so the
tests show the connection really went through TLS with the client certificate of the profile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from starter.cli import EXIT_OK, main
from starter.client import FlowClient
from starter.connection import ConnectionConfigError, connect_client, connect_options
from tests.helpers.tls import Pki, TlsProxy, make_pki, tls_proxy
from tests.workflows.support import definition, start, unique
from worker import build_worker

CONNECTION_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_API_KEY",
    "TEMPORAL_TLS",
    "WFA_TENANT",
    "WFA_TENANT_NAMESPACES",
    "WFA_NAMESPACE_PER_TENANT",
    "WFA_PAYLOAD_KEYS",
    "WFA_PAYLOAD_KEYS_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONNECTION_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest_asyncio.fixture(loop_scope="session")
async def mtls_proxy(pki: Pki, temporal_env: WorkflowEnvironment) -> AsyncIterator[TlsProxy]:
    async with tls_proxy(
        pki, temporal_env.client.service_client.config.target_host, require_client_cert=True
    ) as proxy:
        yield proxy


def write_profiles(path: Path, proxy: TlsProxy, pki: Pki) -> Path:
    """A temporal.toml with a good mTLS profile and three that must fail."""
    path.write_text(
        f"""
[profile.secure]
address = "{proxy.address}"
namespace = "default"
[profile.secure.tls]
server_ca_cert_path = "{pki.server_ca}"
server_name = "localhost"
client_cert_path = "{pki.client.cert}"
client_key_path = "{pki.client.key}"

[profile.no-client-cert]
address = "{proxy.address}"
[profile.no-client-cert.tls]
server_ca_cert_path = "{pki.server_ca}"
server_name = "localhost"

[profile.wrong-ca]
address = "{proxy.address}"
[profile.wrong-ca.tls]
server_ca_cert_path = "{pki.other_ca}"
server_name = "localhost"
client_cert_path = "{pki.client.cert}"
client_key_path = "{pki.client.key}"

[profile.plaintext]
address = "{proxy.address}"
namespace = "staging"
""",
        encoding="utf-8",
    )
    return path


async def test_mtls_profile_serves_worker_client_and_cli(
    mtls_proxy: TlsProxy, pki: Pki, tmp_path: Path, task_queue: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_profiles(tmp_path / "temporal.toml", mtls_proxy, pki)
    client = await connect_client("secure", config_file=str(config))
    assert client.namespace == "default"
    assert mtls_proxy.handshakes == ["wfa-worker"]
    name = unique("tls")
    document = definition(name, [{"id": "greet", "type": "task", "action": "echo", "input": {"value": "hi"}}])
    async with (
        httpx.AsyncClient() as http,
        build_worker(client, task_queue, http, graceful_shutdown_timeout=timedelta(0)),
    ):
        # The client API through the same profile, chosen by the environment this time.
        flows = await FlowClient.connect(task_queue=task_queue, profile="secure", config_file=str(config))
        handle = await start(flows.client, task_queue, document)
        result = await handle.result()
        assert result.state.value == "completed"
        assert [s.output for s in result.steps if s.path == "greet"] == ["hi"]
        # The CLI: --config-file and --profile, nothing else.
        code = await asyncio.to_thread(
            main, ["--config-file", str(config), "--profile", "secure", "status", handle.id]
        )
        out = capsys.readouterr().out
        assert code == EXIT_OK, out
        assert "completed" in out
    assert len(mtls_proxy.handshakes) >= 3
    assert set(mtls_proxy.handshakes) == {"wfa-worker"}


async def test_tls_failures_are_connection_errors(mtls_proxy: TlsProxy, pki: Pki, tmp_path: Path) -> None:
    config = write_profiles(tmp_path / "temporal.toml", mtls_proxy, pki)
    for profile in ("no-client-cert", "wrong-ca", "plaintext"):
        with pytest.raises(ConnectionError, match="cannot reach the Temporal server"):
            await connect_client(profile, config_file=str(config))
    assert mtls_proxy.handshakes.count("wfa-worker") == 0


async def test_tls_from_environment_variables_alone(mtls_proxy: TlsProxy, pki: Pki) -> None:
    env = {
        "TEMPORAL_ADDRESS": mtls_proxy.address,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.server_ca),
        "TEMPORAL_TLS_SERVER_NAME": "localhost",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pki.client.cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pki.client.key),
    }
    client = await connect_client(env=env)
    assert client.namespace == "default"
    assert mtls_proxy.handshakes == ["wfa-worker"]


def test_profile_values_and_environment_overrides(tmp_path: Path, pki: Pki) -> None:
    proxy = TlsProxy(address="127.0.0.1:7999")
    config = str(write_profiles(tmp_path / "temporal.toml", proxy, pki))
    options = connect_options(profile="plaintext", config_file=config, env={})
    assert options["target_host"] == "127.0.0.1:7999"
    assert options["namespace"] == "staging"  # the profile's, in the single-namespace deployment
    assert "tls" not in options or options["tls"] is False
    # TEMPORAL_* override the profile, as in every Temporal tool.
    options = connect_options(
        profile="plaintext",
        config_file=config,
        env={
            "TEMPORAL_ADDRESS": "temporal.internal:7233",
            "TEMPORAL_NAMESPACE": "prod",
            "TEMPORAL_API_KEY": "k1",
        },
    )
    assert options["target_host"] == "temporal.internal:7233"
    assert options["namespace"] == "prod"
    assert options["api_key"] == "k1"
    # The profile from TEMPORAL_PROFILE/TEMPORAL_CONFIG_FILE, an explicit address over everything.
    options = connect_options(
        address="10.0.0.9:7233", env={"TEMPORAL_PROFILE": "secure", "TEMPORAL_CONFIG_FILE": config}
    )
    assert options["target_host"] == "10.0.0.9:7233"
    assert options["tls"].domain == "localhost"
    assert options["tls"].client_cert == pki.client.cert.read_bytes()


def test_unusable_configuration_is_named(tmp_path: Path, pki: Pki) -> None:
    proxy = TlsProxy(address="127.0.0.1:7999")
    config = str(write_profiles(tmp_path / "temporal.toml", proxy, pki))
    with pytest.raises(ConnectionConfigError, match="'nope'"):
        connect_options(profile="nope", config_file=config, env={})
    with pytest.raises(ConnectionConfigError, match="no such file"):
        connect_options(config_file=str(tmp_path / "missing.toml"), env={})
    with pytest.raises(ConnectionConfigError, match="cannot read"):
        connect_options(env={"TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(tmp_path / "missing.pem")})
    # A probe: the SDK turns TLS on for any TEMPORAL_TLS it cannot read, "no" and empty too.
    for off in ("no", "off", "", " 0 ", "Disabled"):
        with pytest.raises(ConnectionConfigError, match=f"TEMPORAL_TLS='{off}' turns TLS on"):
            connect_options(env={"TEMPORAL_TLS": off})
    for read, tls in (("TRUE", True), ("1", True), ("false", False), ("0", False), ("yes", True)):
        assert bool(connect_options(env={"TEMPORAL_TLS": read}).get("tls")) is tls, read
    # Namespaces per tenant: a profile for another namespace would carry the wrong credentials.
    with pytest.raises(ConnectionConfigError, match="names namespace 'staging'"):
        connect_options(
            tenant="acme",
            profile="plaintext",
            config_file=config,
            env={"WFA_TENANT_NAMESPACES": "acme=acme"},
        )
    options = connect_options(
        tenant="acme", profile="secure", config_file=config, env={"WFA_TENANT_NAMESPACES": "acme=default"}
    )
    assert options["namespace"] == "default"
