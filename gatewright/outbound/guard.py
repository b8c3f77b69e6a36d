"""Which addresses the gateway may connect to on a caller's behalf (a task's ``webhookURL``).

A caller must not make the gateway reach inside its own network: loopback, private (RFC 1918,
CGNAT), link-local (cloud metadata at 169.254.169.254), unique-local (fd00::/8, AWS's IPv6 metadata
``fd00:ec2::254``), multicast, reserved and unspecified addresses are refused, whatever the URL
spells (``127.1``, ``2130706433``, ``0x7f000001``, ``[::ffff:127.0.0.1]``, ``localhost``). Only
globally routable addresses pass, unless the operator names an internal receiver in
``GATEWRIGHT_OUTBOUND_ALLOW`` (host names, addresses or networks, comma-separated).

The check runs when a task is submitted and again when each delivery connects: the name is resolved
once, every address it resolves to is checked, and the connection goes to the checked address (the
name still travels in ``Host`` and TLS SNI), so DNS rebinding cannot swap in an internal address
between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address embedded in IPv6
LOCAL_NAMES = ("localhost", "localhost.", "localhost.localdomain")


class Refused(Exception):
    """The URL may not be fetched; the message is safe to show the caller."""


class Unresolved(Refused):
    """The name does not resolve (now): refused when connecting, not when a task is submitted."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def literal_ip(host: str) -> IP | None:
    """``host`` as an address when it is one in any form a resolver would take: dotted, short
    (``127.1``), decimal (``2130706433``), hex (``0x7f000001``), octal, or IPv6."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _real(ip: IP) -> IP:
    """The IPv4 address behind an IPv4-mapped, NAT64 or 6to4 IPv6 one."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def is_internal(ip: IP) -> bool:
    real = _real(ip)
    return not real.is_global or real.is_multicast


def _parse_allowed(entries: Iterable[str]) -> tuple[frozenset[str], tuple[Network, ...]]:
    names: set[str] = set()
    networks: list[Network] = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return frozenset(names), tuple(networks)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: the checked address, and the name the request is for."""

    url: str  # the URL with the checked address in place of the name
    host_header: str
    sni: str | None  # the name TLS must verify (https only)


class AddressGuard:
    def __init__(self, allowed: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self.names, self.networks = _parse_allowed(allowed)
        self.resolver = resolver or system_resolver

    def _allowed(self, ip: IP) -> bool:
        return any(ip in network for network in self.networks)

    def _check_ip(self, ip: IP) -> None:
        if is_internal(ip) and not self._allowed(ip):
            raise Refused("the address is not allowed: it is internal (loopback, private, link-local or reserved)")

    @staticmethod
    def _split(url: str) -> tuple[SplitResult, str, int]:
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise Refused("the URL is not valid") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Refused("only absolute http:// and https:// URLs are allowed")
        return parts, parts.hostname.lower(), port

    def check_literal(self, url: str) -> None:
        """What can be decided without a resolver: the scheme, address literals and local names."""
        _, host, _ = self._split(url)
        if host.rstrip(".") in self.names:
            return
        ip = literal_ip(host)
        if ip is not None:
            self._check_ip(ip)
        elif host in LOCAL_NAMES or host.rstrip(".").endswith(".localhost"):
            raise Refused("the address is not allowed: it is internal (loopback)")

    async def target(self, url: str) -> Target:
        """Resolve once and check every address; the connection must go to ``Target.url``."""
        self.check_literal(url)
        parts, host, port = self._split(url)
        if host.rstrip(".") in self.names:
            return Target(url, parts.netloc.rpartition("@")[2], None)
        ip = literal_ip(host)
        if ip is None:
            try:
                found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in await self.resolver(host, port)]
            except (OSError, ValueError):
                raise Unresolved("the host name does not resolve") from None
            if not found:
                raise Unresolved("the host name does not resolve")
            for each in found:
                self._check_ip(each)
            ip = found[0]
        shown = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{shown}:{port}" if parts.port else shown
        checked = parts._replace(netloc=netloc).geturl()
        host_header = parts.netloc.rpartition("@")[2]  # never forward userinfo
        return Target(checked, host_header, host if parts.scheme == "https" else None)
