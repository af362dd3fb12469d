"""The outbound policy, played by the attacker: every URL form of an internal address is refused.

Real traffic goes only to loopback. The "internal" server listens on 127.0.0.1 and counts what
reaches it; where a test needs a stand-in for a public address it uses a second loopback address
(127.0.0.2) that the test's policy allows, so no packet leaves this machine. DNS answers come from
resolvers the tests control.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from activities.outbound import (
    OutboundPolicy,
    OutboundRefusedError,
    build_http_client,
    deny_rule,
)
from tests.helpers.http_server import RecordingServer

# Literal spellings of internal addresses (the host part of a URL), each with the rule that names it.
LITERAL_FORMS: list[tuple[str, str]] = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("127.0.1", "loopback"),
    ("2130706433", "loopback"),  # decimal
    ("0x7f000001", "loopback"),  # hex
    ("0x7f.0.0.1", "loopback"),
    ("0177.0.0.1", ""),  # octal: httpx refuses the URL itself (InvalidURL) before connecting
    ("127.255.255.254", "loopback"),
    ("[::1]", "loopback"),
    ("[0:0:0:0:0:0:0:1]", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("[::]", "unspecified"),
    ("10.0.0.1", "private (RFC 1918)"),
    ("10.255.255.255", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.254", "private (RFC 1918)"),
    ("192.168.1.1", "private (RFC 1918)"),
    ("100.64.0.1", "carrier-grade NAT (RFC 6598)"),
    ("100.127.255.254", "carrier-grade NAT (RFC 6598)"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("2852039166", "link-local (cloud metadata)"),  # 169.254.169.254 in decimal
    ("[fe80::1]", "link-local (cloud metadata)"),
    ("[fd00::1]", "IPv6 unique local"),
    ("[fc00::1]", "IPv6 unique local"),
    ("[fd00:ec2::254]", "IPv6 unique local"),  # AWS's IPv6 metadata address
    ("[fec0::1]", "IPv6 site-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.0.170", "reserved"),
    ("198.18.0.1", "reserved"),
    ("[2001:db8::1]", "reserved"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
    ("[::ffff:7f00:1]", "IPv4-mapped loopback"),
    ("[::ffff:169.254.169.254]", "IPv4-mapped link-local (cloud metadata)"),
    ("[::ffff:10.0.0.1]", "IPv4-mapped private (RFC 1918)"),
    ("[::127.0.0.1]", "IPv4-compatible loopback"),
    ("[64:ff9b::7f00:1]", "NAT64 loopback"),
    ("[64:ff9b::a9fe:a9fe]", "NAT64 link-local (cloud metadata)"),
    # Under a local-use /48 prefix this carries 10.0.0.1 (read as 8.8.8.8 before: a probe).
    ("[64:ff9b:1:a00:0:100:808:808]", "local-use NAT64 (RFC 8215)"),
    ("[64:ff9b:1::808:808]", "local-use NAT64 (RFC 8215)"),
    ("[2002:7f00:1::]", "6to4 loopback"),
    ("[2002:a9fe:a9fe::]", "6to4 link-local (cloud metadata)"),
    ("[2001::1]", "Teredo"),
]

# Names whose DNS answer is internal (answered by the test's resolver).
DNS_FORMS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "ula.example": ["fd12:3456::1"],
    "mapped.example": ["::ffff:192.168.0.1"],
    "cgnat.example": ["100.100.100.200"],  # Alibaba Cloud's metadata address
}


class FakeDns:
    """A resolver the test controls; counts look-ups per name."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: dict[str, int] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        n = self.calls[host] = self.calls.get(host, 0) + 1
        options = self.answers.get(host)
        if not options:
            raise OSError(f"no such host {host!r}")
        return options[min(n, len(options)) - 1]


@pytest.fixture
def internal() -> Iterator[RecordingServer]:
    with RecordingServer("127.0.0.1") as server:
        yield server


@pytest.fixture
def public_standin() -> Iterator[RecordingServer]:
    with RecordingServer("127.0.0.2") as server:
        yield server


@pytest_asyncio.fixture
async def dns() -> FakeDns:
    return FakeDns({name: [answer] for name, answer in DNS_FORMS.items()})


@pytest_asyncio.fixture
async def deny_all(dns: FakeDns) -> AsyncIterator[httpx.AsyncClient]:
    async with build_http_client(OutboundPolicy(), resolver=dns) as client:
        yield client


def _port(server: RecordingServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(("host", "rule"), LITERAL_FORMS, ids=[h for h, _ in LITERAL_FORMS])
async def test_literal_internal_forms_are_refused_naming_the_rule(
    deny_all: httpx.AsyncClient, internal: RecordingServer, host: str, rule: str
) -> None:
    url = f"http://{host}:{_port(internal)}/secret"
    if not rule:
        with pytest.raises(httpx.InvalidURL):
            await deny_all.get(url)
    else:
        with pytest.raises(OutboundRefusedError) as info:
            await deny_all.get(url)
        assert info.value.rule == rule
        assert rule in str(info.value)
    assert internal.requests() == []


@pytest.mark.parametrize("name", sorted(DNS_FORMS))
async def test_names_resolving_to_internal_addresses_are_refused(
    deny_all: httpx.AsyncClient, internal: RecordingServer, dns: FakeDns, name: str
) -> None:
    with pytest.raises(OutboundRefusedError) as info:
        await deny_all.get(f"http://{name}:{_port(internal)}/secret")
    assert info.value.host == name
    assert dns.calls[name] == 1
    assert internal.requests() == []


def test_the_corpus_is_at_least_forty_forms() -> None:
    assert len(LITERAL_FORMS) + len(DNS_FORMS) >= 40


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_fall_under_no_rule(address: str) -> None:
    assert deny_rule(ipaddress.ip_address(address)) is None


async def test_an_allowance_lets_loopback_through(internal: RecordingServer) -> None:
    async with build_http_client(OutboundPolicy.loopback()) as client:
        response = await client.get(f"{internal.url}/ok")
    assert response.status_code == 200
    assert len(internal.requests(path="/ok")) == 1


async def test_an_allowed_host_name_may_resolve_internally(internal: RecordingServer) -> None:
    dns = FakeDns({"crm.internal": [["127.0.0.1"]]})
    async with build_http_client(OutboundPolicy.parse("crm.internal"), resolver=dns) as client:
        response = await client.get(f"http://crm.internal:{_port(internal)}/ok")
        assert response.status_code == 200
        # Another name resolving to the same address is not allowed by the host allowance.
        dns.answers["other.internal"] = [["127.0.0.1"]]
        with pytest.raises(OutboundRefusedError):
            await client.get(f"http://other.internal:{_port(internal)}/ok")
    assert len(internal.requests(path="/ok")) == 1


async def test_dns_rebinding_cannot_pass(internal: RecordingServer, public_standin: RecordingServer) -> None:
    """The resolver answers the allowed (public stand-in) address, then the internal one on every
    later look-up: a check that resolved separately from the connection would be fooled."""
    dns = FakeDns({"rebind.example": [["127.0.0.2"], ["127.0.0.1"]]})
    policy = OutboundPolicy.parse("127.0.0.2/32")
    async with build_http_client(policy, resolver=dns) as client:
        first = await client.get(f"http://rebind.example:{_port(public_standin)}/hello")
        assert first.status_code == 200
        # Fresh connections (no keep-alive reuse): each resolves once, and the internal answer fails.
        for _ in range(5):
            with pytest.raises(OutboundRefusedError):
                await client.get(
                    f"http://rebind.example:{_port(public_standin)}/hello", headers={"Connection": "close"}
                )
    assert internal.requests() == []
    assert len(public_standin.requests(path="/hello")) == 1


async def test_redirects_to_internal_addresses_are_not_followed(
    internal: RecordingServer, public_standin: RecordingServer
) -> None:
    public_standin.route("GET", "/go", [(302, {"Location": f"{internal.url}/secret"}, None)])
    async with build_http_client(OutboundPolicy.parse("127.0.0.2/32")) as client:
        response = await client.get(f"{public_standin.url}/go")
    assert response.status_code == 302
    assert internal.requests() == []


async def test_proxy_environment_is_ignored(
    monkeypatch: pytest.MonkeyPatch, internal: RecordingServer, public_standin: RecordingServer
) -> None:
    """A proxy would connect on the worker's behalf, past the check."""
    monkeypatch.setenv("HTTP_PROXY", internal.url)
    monkeypatch.setenv("ALL_PROXY", internal.url)
    async with build_http_client(OutboundPolicy.parse("127.0.0.2/32")) as client:
        response = await client.get(f"{public_standin.url}/direct")
    assert response.status_code == 200
    assert internal.requests() == []


def test_allowances_parse_networks_and_hosts_and_refuse_nonsense() -> None:
    policy = OutboundPolicy.parse(" 10.0.0.0/8, ::1 ,Crm.Internal. ,")
    assert [str(n) for n in policy.allow_networks] == ["10.0.0.0/8", "::1/128"]
    assert policy.allow_hosts == frozenset({"crm.internal"})
    policy.check("x", "10.9.9.9")
    with pytest.raises(OutboundRefusedError):
        policy.check("x", "192.168.0.1")
    with pytest.raises(ValueError, match="neither a network"):
        OutboundPolicy.parse("http://evil/")
    assert OutboundPolicy.from_env({}) == OutboundPolicy()


async def test_the_http_action_reports_a_refusal_as_a_non_retryable_step_error(
    internal: RecordingServer,
) -> None:
    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.http import HttpActions
    from interpreter.actions import ActionRequest

    request = ActionRequest(
        step_id="steal",
        idempotency_key="k",
        input={"method": "POST", "url": f"http://0x7f000001:{_port(internal)}/admin", "json": {"a": 1}},
    )
    async with build_http_client(OutboundPolicy()) as client:
        with pytest.raises(ApplicationError) as info:
            await ActivityEnvironment().run(HttpActions(client).http, request)
    assert info.value.type == "OutboundRefused"
    assert info.value.non_retryable
    assert "loopback" in info.value.message
    assert "0x7f000001" in info.value.message
    assert internal.requests() == []
