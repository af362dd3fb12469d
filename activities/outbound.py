"""The outbound policy: where network-reaching actions may connect.

Definitions are written by tenants' users and are not trusted to reach internal networks, so every
connection an action opens goes through :class:`PolicyNetworkBackend`: it resolves the host once,
checks every address against the deny rules below (and the worker's allowances), and connects to an
address it checked. There is no second resolution between the check and the connection, so a DNS
answer that changes (rebinding) cannot slip a private address past the check. TLS still verifies
the certificate against the host name of the URL.

Deny rules (each refusal names its rule and the host): unspecified, loopback, private (RFC 1918),
carrier-grade NAT (RFC 6598), link-local (cloud metadata lives at 169.254.169.254), IPv6 unique
local and site-local, multicast, reserved and documentation ranges, and IPv6 forms that embed an
IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) whenever the embedded address is denied;
Teredo is denied outright. Anything else that is not globally routable is denied as ``reserved``.

Allowances come from the worker's configuration only (never from a definition): networks (CIDR)
and host names in ``WFA_OUTBOUND_ALLOW``, comma-separated. The tests and the demo allow loopback
explicitly; production allows nothing internal unless configured.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from temporalio.exceptions import ApplicationError

__all__ = [
    "OUTBOUND_ALLOW_ENV",
    "OutboundPolicy",
    "OutboundRefusedError",
    "PolicyNetworkBackend",
    "Resolver",
    "build_http_client",
]

OUTBOUND_ALLOW_ENV = "WFA_OUTBOUND_ALLOW"
"""Comma-separated networks (``127.0.0.0/8``, ``::1``) and host names the worker may reach although
the deny rules would refuse them."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Resolves ``(host, port)`` to the addresses to try, in order."""


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


_DENY_RULES: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("unspecified", _nets("0.0.0.0/8", "::/128")),
    ("loopback", _nets("127.0.0.0/8", "::1/128")),
    ("private (RFC 1918)", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("carrier-grade NAT (RFC 6598)", _nets("100.64.0.0/10")),
    ("link-local (cloud metadata)", _nets("169.254.0.0/16", "fe80::/10")),
    ("IPv6 unique local", _nets("fc00::/7")),
    ("IPv6 site-local", _nets("fec0::/10")),
    ("multicast", _nets("224.0.0.0/4", "ff00::/8")),
    ("Teredo", _nets("2001::/32")),
    # Local-use NAT64 (RFC 8215): the network picks where the IPv4 address sits (a /48 to a /96
    # prefix), so no one reading of it is right: 64:ff9b:1:a00:0:100:808:808 carries 10.0.0.1 under
    # a /48, and was read as 8.8.8.8 (a probe). The whole prefix is refused.
    ("local-use NAT64 (RFC 8215)", _nets("64:ff9b:1::/48")),
    (
        "reserved",
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
            "100::/64",
            "2001:db8::/32",
        ),
    ),
)

_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = _nets("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")


class OutboundRefusedError(Exception):
    """A connection the outbound policy refuses: names the rule, the host and the address."""

    def __init__(self, host: str, address: str, rule: str) -> None:
        super().__init__(f"outbound policy refuses {host!r} ({address}): {rule} address")
        self.host = host
        self.address = address
        self.rule = rule

    def application_error(self, what: str) -> ApplicationError:
        """The action's permanent failure for this refusal: ``OutboundRefused``, naming ``what``
        (the request) and the rule and host in its details."""
        return ApplicationError(
            f"{what} refused: {self}",
            {"rule": self.rule, "host": self.host},
            type="OutboundRefused",
            non_retryable=True,
        )


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 form carries, with the form's name."""
    if addr in _IPV4_MAPPED:
        return "IPv4-mapped", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _IPV4_COMPATIBLE and int(addr) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    for net in _NAT64:
        if addr in net:
            return "NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in _SIX_TO_FOUR:
        return "6to4", ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
    return None


def deny_rule(addr: IPAddress) -> str | None:
    """The deny rule an address falls under, or None when it is a public address."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            form, inner = embedded
            rule = deny_rule(inner)
            return f"{form} {rule}" if rule else None
    for name, nets in _DENY_RULES:
        if any(addr in net for net in nets if net.version == addr.version):
            return name
    if not addr.is_global:
        return "reserved"
    return None


_NUMERIC_IPV4 = re.compile(r"(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host denotes, in every spelling the C library accepts (``127.1``,
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``), so none of them reaches a resolver."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_IPV4.fullmatch(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def _parse_allowance(item: str) -> IPNetwork | str:
    try:
        return ipaddress.ip_network(item, strict=False)
    except ValueError:
        pass
    host = item.strip().lower().rstrip(".")
    if not host or any(c in host for c in "/ :@"):
        raise ValueError(f"{item!r} is neither a network (CIDR) nor a host name")
    return host


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses actions may connect to.

    Attributes:
        allow_networks: Networks allowed although a deny rule covers them (e.g. loopback in tests).
        allow_hosts: Host names allowed whatever they resolve to (an internal service by name).
    """

    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str | Iterable[str]) -> OutboundPolicy:
        """A policy from ``"127.0.0.0/8, ::1, crm.internal"`` (or a list of such items).

        Raises:
            ValueError: Naming an item that is neither a network nor a host name.
        """
        items = text.split(",") if isinstance(text, str) else list(text)
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in items:
            if not raw.strip():
                continue
            parsed = _parse_allowance(raw.strip())
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        return cls(allow_networks=tuple(networks), allow_hosts=frozenset(hosts))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OutboundPolicy:
        """The worker's policy from ``WFA_OUTBOUND_ALLOW`` (unset: nothing internal is allowed)."""
        source = os.environ if env is None else env
        return cls.parse(source.get(OUTBOUND_ALLOW_ENV, ""))

    @classmethod
    def loopback(cls) -> OutboundPolicy:
        """Loopback allowed: for tests and the demo, whose services all listen on this machine."""
        return cls.parse("127.0.0.0/8,::1")

    def check(self, host: str, address: str) -> None:
        """Checks one resolved address of ``host``.

        Raises:
            OutboundRefusedError: When a deny rule covers it and no allowance does.
        """
        addr = ipaddress.ip_address(address.split("%", 1)[0])
        if host.lower().rstrip(".") in self.allow_hosts:
            return
        if any(addr in net for net in self.allow_networks if net.version == addr.version):
            return
        rule = deny_rule(addr)
        if rule is not None:
            raise OutboundRefusedError(host, str(addr), rule)


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolves with the operating system's resolver (``getaddrinfo``), every address family."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class PolicyNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows.

    The host is resolved once per connection; the connection goes to a checked address (never
    resolved again), so DNS rebinding cannot pass. Unix sockets are refused.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = numeric_host(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: no address")
        refusal: OutboundRefusedError | None = None
        last_error: Exception | None = None
        for address in addresses:
            try:
                self._policy.check(host, address)
            except OutboundRefusedError as exc:
                refusal = refusal or exc
                continue
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        assert refusal is not None
        raise refusal

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefusedError(path, "unix socket", "local socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def build_http_client(
    policy: OutboundPolicy, resolver: Resolver | None = None, **client_options: Any
) -> httpx.AsyncClient:
    """The shared client of network-reaching actions, every connection checked by ``policy``.

    Redirects are not followed (a redirect is a response the action reports), proxies from the
    environment are ignored (they would connect on the worker's behalf, past the check).
    """
    transport = httpx.AsyncHTTPTransport()
    # httpx builds its connection pool without a way to pass a network backend; this pool is the
    # one it would build (default limits, HTTP/1.1, verified TLS), with the policy's backend.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=PolicyNetworkBackend(policy, resolver),
    )
    # What the actions inflate themselves, bounded (``activities.http._decoded_chunks``): httpx
    # would add br and zstd to it when their packages happen to be installed.
    headers = httpx.Headers(client_options.pop("headers", None))
    headers.setdefault("Accept-Encoding", "gzip, deflate")
    return httpx.AsyncClient(
        transport=transport, trust_env=False, follow_redirects=False, headers=headers, **client_options
    )
