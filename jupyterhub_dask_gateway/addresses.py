"""Checking the addresses a scheduler reports against where its backend started it.

A scheduler runs its owner's code, so its heartbeat is hostile input: the TCP proxy
and the dashboard proxy connect wherever ``scheduler_address`` / ``dashboard_address``
/ ``api_address`` point. This module owns the parsing of those addresses and the
rules every backend shares (never link-local, cloud metadata, multicast or
unspecified; an admin's allow-list of networks); each backend then says where its
processes really are (``Backend.check_addresses``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

REPORTED = ("scheduler_address", "dashboard_address", "api_address")

# Metadata services some clouds serve outside the link-local range.
_METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


def split_address(address: str) -> tuple[str, int]:
    """``tls://host:port`` or ``http://[v6]:port`` → ``(host, port)``; ValueError if not."""
    parts = urlsplit(address)
    host, port = parts.hostname, parts.port
    if not host or port is None or parts.path not in ("", "/"):
        raise ValueError(f"not a scheme://host:port address: {address!r}")
    return host, port


def split_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (``default_host``) → ``(host, port)``.

    For bind and listen addresses in config (no scheme); ValueError if malformed.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port}")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a host:port address: {value!r}")
    return host or default_host, int(port)


def join_hostport(host: str, port: int) -> str:
    """The inverse of ``split_hostport``: brackets around IPv6 addresses."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def never_routable(ip: ipaddress._BaseAddress) -> str:
    """Why no backend may route to ``ip`` (link-local, metadata, ...), or ""."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "not a host address"
    return ""


async def resolve(host: str) -> set[ipaddress._BaseAddress]:
    """Every IP ``host`` resolves to (a literal IP resolves to itself); empty if none."""
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}


def in_networks(ips, networks) -> bool:
    return bool(ips) and all(any(ip in net for net in networks) for ip in ips)


def parse_networks(values) -> list:
    return [ipaddress.ip_network(v, strict=False) for v in values]
