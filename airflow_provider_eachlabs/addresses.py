"""Every address rule in one place: where the key may go, and which URLs may be fetched or written.

Three kinds of address meet the provider: the API host from the connection (the only place the key
is ever sent), URLs the API is asked to fetch (inputs), and URLs the API answers with (outputs to
download, presigned upload targets). The last kind comes from someone else, so it is checked the way
the resolver and the socket will see it: a host that looks numeric must be a canonical address
(``127.1``, ``0x7f.1``, ``0177.0.0.1`` and ``2130706433`` all reach loopback), and the address
actually connected to must be public (``peer_is_public``), so a name that resolves to a private
address is refused too.

No network calls, no Airflow, no HTTP library: pure functions on strings and addresses.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

from airflow_provider_eachlabs.exceptions import EachlabsConfigError

DEFAULT_API_HOST = "https://api.eachlabs.ai"

PUBLIC_URL_RULE = "must be a public https:// URL (no data: URIs, localhost or private addresses)"

_DNS_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)+")
# WHATWG URL parsing (and inet_aton) read a host whose last label is a number as an IPv4 address.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
_DEFAULT_PORTS = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NotCanonical(ValueError):
    """A host that a resolver would read as a number, written in a form other than a dotted quad."""


def host_address(host: str) -> IPAddress | None:
    """The IP address a host literal stands for, None for a DNS name, ``NotCanonical`` otherwise."""
    name = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    last_label = name.rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last_label):
        raise NotCanonical(host)
    return None


def is_public_address(address: IPAddress) -> bool:
    """A globally routable unicast address; IPv4 inside IPv6 (mapped, 6to4, Teredo) is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not address.is_multicast


def is_loopback_host(host: str) -> bool:
    try:
        address = host_address(host)
    except NotCanonical:
        return False
    if address is None:
        return host.lower().rstrip(".") == "localhost"
    return address.is_loopback


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return None
    return parts


def is_public_https_url(url: str) -> bool:
    """HTTPS to a DNS name or a global address; never loopback, private, link-local or local names.

    Names are not resolved here (no network call before validation); the transport checks the
    address it connects to.
    """
    parts = _split(url)
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.username is not None:
        return False
    host = parts.hostname.lower().rstrip(".")
    try:
        address = host_address(host)
    except NotCanonical:
        return False
    if address is not None:
        return is_public_address(address)
    if host.endswith(_LOCAL_SUFFIXES):
        return False
    return _DNS_NAME.fullmatch(host) is not None  # two labels at least: never `localhost`


def is_api_host_url(url: str, api_host: str | None) -> bool:
    """Whether ``url`` is on the configured API host: same scheme, host and port, below its path."""
    if not api_host:
        return False
    parts, host = _split(url), _split(api_host)
    if parts is None or host is None or parts.username is not None or not parts.hostname:
        return False
    return (
        parts.scheme == host.scheme
        and parts.hostname == host.hostname
        and (parts.port or _DEFAULT_PORTS.get(parts.scheme)) == (host.port or _DEFAULT_PORTS.get(host.scheme))
        and parts.path.startswith(host.path.rstrip("/") + "/")
    )


def validate_api_host(host: str) -> str:
    """The API base URL: HTTPS, or plain HTTP to a loopback host only, so the key never travels in clear."""
    candidate = host.strip().rstrip("/") or DEFAULT_API_HOST
    parts = _split(candidate)
    if parts is None or not parts.hostname or parts.scheme not in ("http", "https"):
        raise EachlabsConfigError(
            f"Eachlabs connection host {host!r} is not a URL: write it as https://<host> "
            f"(the default is {DEFAULT_API_HOST})"
        )
    if parts.username is not None or parts.query or parts.fragment:
        raise EachlabsConfigError(
            f"Eachlabs connection host {host!r} must be a plain https://<host>[:port] URL "
            "(no user name, query or fragment)"
        )
    try:
        host_address(parts.hostname)
    except NotCanonical:
        raise EachlabsConfigError(
            f"Eachlabs connection host {host!r} is a number in an unusual form: write the address "
            "as four decimal parts (for example 127.0.0.1) or use a host name"
        ) from None
    if parts.scheme == "https" or is_loopback_host(parts.hostname):
        return candidate
    raise EachlabsConfigError(
        f"Eachlabs connection host {host!r} must use https:// (plain http:// is allowed only for "
        "localhost / 127.0.0.1 / ::1) so that the API key is never sent in clear"
    )


def peer_is_public(peer_ip: str) -> bool:
    """Whether the address a socket connected to is public (checked after DNS, before any byte).

    An IPv6 peer may carry its zone (``fe80::1%eth0``); ``ipaddress`` reads it and judges the address."""
    try:
        return is_public_address(ipaddress.ip_address(peer_ip))
    except ValueError:
        return False
