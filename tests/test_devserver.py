"""The embedded dev-server launcher: start, search attributes registered, stop, restart on the same DB."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.common import SearchAttributeIndexedValueType

from starter.devserver import DevServer, DevServerError, find_binary
from workflows.search_attributes import ALL_KEYS, CLI_TYPES

EXPECTED_TYPES = {key.name: int(key.indexed_value_type) for key in ALL_KEYS}


def test_cli_types_match_keys() -> None:
    """CLI_TYPES (for --search-attribute) and ALL_KEYS (for the SDK) describe the same attributes."""
    # The CLI's words are CamelCase (KeywordList), the enum's names SNAKE_CASE (KEYWORD_LIST).
    enum_name = {t: re.sub(r"(?<!^)(?=[A-Z])", "_", t).upper() for t in CLI_TYPES.values()}
    assert {name: SearchAttributeIndexedValueType[enum_name[t]] for name, t in CLI_TYPES.items()} == {
        key.name: key.indexed_value_type for key in ALL_KEYS
    }


async def _registered(server: DevServer) -> dict[str, int]:
    client = await server.connect()
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=server.namespace)
    )
    return {name: int(value_type) for name, value_type in listed.custom_attributes.items()}


async def test_start_stop_restart_on_same_db(tmp_path: Path) -> None:
    server = DevServer(tmp_path, port=0)
    async with server:
        assert server.running
        # Fairness on (the fairness key every run carries is honoured only with it): the running
        # server's own command line has it.
        assert server.pid is not None
        cmdline = await asyncio.to_thread(Path(f"/proc/{server.pid}/cmdline").read_bytes)
        running = [arg.decode() for arg in cmdline.split(b"\0")]
        flag = running.index("matching.enableFairness=true")
        assert running[flag - 1] == "--dynamic-config-value"
        assert server.address == f"127.0.0.1:{server.port}"
        assert server.ui_url.startswith("http://127.0.0.1:")
        registered = await _registered(server)
        assert {name: registered.get(name) for name in EXPECTED_TYPES} == EXPECTED_TYPES
        first_pid = server.pid
    assert not server.running
    assert server.db_path.is_file()
    assert server.log_path.is_file()

    # Same SQLite file: the --search-attribute flags re-register existing attributes; must not fail.
    async with DevServer(tmp_path, port=0) as again:
        assert again.pid != first_pid
        registered = await _registered(again)
        assert {name: registered.get(name) for name in EXPECTED_TYPES} == EXPECTED_TYPES


def test_sync_api_and_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        server = DevServer(tmp_path, port=busy_port).start()
        try:
            assert server.port != busy_port  # picked another one instead of failing
            with pytest.raises(DevServerError, match="already using"):
                DevServer(tmp_path, port=0).start()  # one server per state dir
        finally:
            server.stop()
    assert not server.running
    server.stop()  # idempotent


def test_state_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFA_STATE_DIR", str(tmp_path / "elsewhere"))
    assert DevServer().state_dir == tmp_path / "elsewhere"
    monkeypatch.delenv("WFA_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    assert DevServer().state_dir == tmp_path / ".state"


def test_missing_binary_error() -> None:
    with pytest.raises(DevServerError, match="install no-such-package"):
        find_binary("no-such-binary-xyz", "no-such-package")


async def test_a_port_taken_between_the_check_and_the_bind_is_retried_on_fresh_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy machine another process can bind a port after it was found free: the launcher
    starts the server again on fresh ports instead of failing (the race, made certain here)."""
    import starter.devserver as devserver

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        real_is_free = devserver.port_is_free
        lied = []

        def first_check_lies(port: int, host: str = devserver.DEFAULT_HOST) -> bool:
            if port == busy and not lied:
                lied.append(port)
                return True  # as if the port was taken just after this check
            return real_is_free(port, host)

        monkeypatch.setattr(devserver, "port_is_free", first_check_lies)
        server = DevServer(tmp_path, port=0, ui_port=busy)
        async with server:
            assert server.running
            assert lied == [busy]
            assert server.ui_port != busy
            assert "address already in use" in server.log_path.read_text()
