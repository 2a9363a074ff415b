"""A profile's server URLs: parsing a list of them, and the order a client tries them in.

Every URL of one list must lead to the same plauder service: nodes sharing one
database, or one server under several addresses. A client tries them in turn
(`ServerOrder.round`): the one that worked last first, then the others in an
order drawn once per client, so that clients spread over the nodes.
"""

import hashlib
import re
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from plauder.client.errors import BadServerUrl

_SEPARATORS = re.compile(r"[,\s]+")
_SCHEMES = ("http", "https", "ws", "wss")


def parse_servers(values: Iterable[str]) -> list[str]:
    """Server URLs from values that may each hold several (comma or space separated).

    A trailing slash is dropped, a repeated URL kept once, the order kept.
    Raises BadServerUrl for a URL that is not http(s)/ws(s)://host[:port] or
    host:port, and for an empty list.
    """
    out: list[str] = []
    for value in values:
        for part in _SEPARATORS.split(value):
            if part:
                _check(part)
                url = part.rstrip("/")
                if url not in out:
                    out.append(url)
    if not out:
        raise BadServerUrl("give at least one server URL")
    return out


def _check(url: str) -> None:
    """Raise BadServerUrl unless the URL names a scheme plauder speaks and a host."""
    full = url if "://" in url else f"http://{url}"
    try:
        parts = urlsplit(full)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise BadServerUrl(f"{url}: {exc}") from exc
    if parts.scheme not in _SCHEMES:
        raise BadServerUrl(f"{url}: the scheme must be one of {', '.join(_SCHEMES)}")
    if not parts.hostname:
        raise BadServerUrl(f"{url}: no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadServerUrl(f"{url}: give the server's address only, without a path")


class ServerOrder:
    """The order in which one client tries its servers.

    Shuffled, the order is drawn once per `ServerOrder` (a random key ranks the
    URLs, so a URL added later slots in without reshuffling the others);
    otherwise it is the order of the list.
    """

    def __init__(self, shuffle: bool = True) -> None:
        self._key = secrets.token_bytes(16) if shuffle else None

    def base(self, servers: list[str]) -> list[str]:
        """All servers in this client's order."""
        key = self._key
        if key is None:
            return list(servers)
        return sorted(servers, key=lambda url: hashlib.sha256(key + url.encode()).digest())

    def round(self, servers: list[str], last: str | None, moving_on: bool = False) -> list[str]:
        """One round of attempts: from `last` on (or from the one after it when moving on)."""
        order = self.base(servers)
        if last in order:
            start = order.index(last) + (1 if moving_on else 0)
            order = order[start:] + order[:start]
        return order
