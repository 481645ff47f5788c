"""Which IP addresses rest_executor may connect to: a pure classifier, no I/O.

`non_public_reason` names why an address is not a public unicast address (or returns None when
it is). It is written out range by range rather than trusting `ipaddress.is_global`, whose
answers differ between Python releases and which calls multicast, NAT64, 6to4 and
IPv4-compatible addresses global: each of those can lead back to loopback or the local network.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

# Ranges that are not public unicast, most specific first where they nest.
_IPV4_RANGES: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "reserved (documentation)"),
        ("192.88.99.0/24", "reserved (6to4 relay)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved (benchmarking)"),
        ("198.51.100.0/24", "reserved (documentation)"),
        ("203.0.113.0/24", "reserved (documentation)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    )
)

_UNSPECIFIED_V6 = IPv6Address("::")
_LOOPBACK_V6 = IPv6Address("::1")
_IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
# Only 2000::/3 holds global unicast addresses; inside it these ranges are not public, and
# the translation prefixes (NAT64, 6to4, Teredo) can carry an IPv4 address a gateway would
# reach on our behalf, so they are refused whole.
_GLOBAL_UNICAST = IPv6Network("2000::/3")
_IPV6_RANGES: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(cidr), reason)
    for cidr, reason in (
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "NAT64 (local use)"),
        ("100::/64", "reserved (discard)"),
        ("2001::/32", "Teredo"),
        ("2001::/23", "reserved (IETF protocol assignments)"),
        ("2001:db8::/32", "reserved (documentation)"),
        ("2002::/16", "6to4"),
        ("3fff::/20", "reserved (documentation)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` must not be connected to ("loopback", "IPv4-mapped private", ...), or
    None for a public unicast address."""
    if isinstance(address, IPv4Address):
        for network, reason in _IPV4_RANGES:
            if address in network:
                return reason
        return None
    if address.scope_id is not None:  # a zone (fe80::1%eth0) does not change the range
        address = IPv6Address(int(address))
    if address == _UNSPECIFIED_V6:
        return "unspecified"
    if address == _LOOPBACK_V6:
        return "loopback"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        form, ipv4 = embedded
        inner = non_public_reason(ipv4)
        return None if inner is None else f"{form} {inner}"
    for network6, reason6 in _IPV6_RANGES:
        if address in network6:
            return reason6
    if address not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def is_public(address: IPAddress) -> bool:
    return non_public_reason(address) is None


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d)
    IPv6 address: a socket connects to that IPv4 address, so it is judged instead."""
    if address in _IPV4_MAPPED:
        return "IPv4-mapped", IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE:
        return "IPv4-compatible", IPv4Address(int(address) & 0xFFFFFFFF)
    return None
