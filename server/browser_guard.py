"""Refuse what a web page can make a browser send to a codeloop server on this machine.

Auth is off until the first token exists, so on a workstation the API answers whoever can
reach 127.0.0.1, and every web page the user opens can: a page may POST to any address
without asking first (a no-cors `fetch`, a form), and a DNS-rebinding page may even read the
answers (the browser takes `evil.example:8000`, rebound to 127.0.0.1, for the page's own
origin). Three checks close that; codeloop's own clients (httpx in the language server, the
CLI and the trainer) pass all three without trying:

1. Host (every request): the Host header must name this server: a loopback name, an IP
   address, the configured `host`, or an entry of `allowed_hosts`. A rebinding page's
   requests carry its own name: 400. (An IP address cannot be rebound: a page at
   http://10.0.0.5:8000 is this server's own page.)
2. Origin (every request but GET/HEAD/OPTIONS): browsers send it with every cross-origin
   request and every POST. One from another origin than the server's own (the Host the
   request names; or a name in `allowed_hosts`, for a proxy that rewrites Host): 403.
3. Content type: server/limits.py refuses a body not sent as JSON (415). Without a CORS
   preflight, which this server never grants, a page can send only text/plain, form data or
   a typeless blob, and FastAPI would have parsed a typeless body as JSON.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.limits import refuse

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str) -> tuple[str, int | None] | None:
    """`name[:port]` or `[v6]:port` -> (lower-case name without a final dot, port); None if malformed."""
    try:
        parts = urlsplit("//" + value)
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port, or brackets that do not close
        return None
    if not host or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return host.rstrip("."), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which names this server answers to (Host) and which other origins may change state."""

    def __init__(self, bind_host: str, extra: Iterable[str] = ()):
        self.extra = [e.lower().rstrip(".") for e in extra]
        self.any_host = "*" in self.extra
        names = set(LOOPBACK_NAMES)
        if bind_host.lower() in WILDCARD_BINDS:
            names.add(socket.gethostname().lower())  # what colleagues are likely to type
        else:
            names.add(bind_host.lower().rstrip("."))
        self.names = frozenset(names)

    def describe(self) -> str:
        """The names it answers to, for the start-up log."""
        return ", ".join(sorted(self.names | set(self.extra)))

    def host_allowed(self, name: str) -> bool:
        return self.any_host or name in self.names or _is_ip(name) or self.listed(name)

    def listed(self, name: str) -> bool:
        """An entry of allowed_hosts names it: `codeloop.example.com`, or `*.example.com`."""
        return any(name == e or (e.startswith("*.") and name.endswith(e[1:])) for e in self.extra if e != "*")


class BrowserGuard:
    """ASGI middleware: the Host and Origin checks above, before anything else runs."""

    def __init__(self, app: ASGIApp, policy: HostPolicy):
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host_header = headers.get(b"host", b"").decode("latin-1")
        host = split_host(host_header) if host_header else None
        if host_header and (host is None or not self.policy.host_allowed(host[0])):
            return await refuse(send, 400, f"Host {host_header!r} does not name this server; if clients reach it by "
                                           "that name, add it to the setting allowed_hosts")
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS and not self._same_site(origin.decode("latin-1"), host):
            return await refuse(send, 403, f"refused: a web page of another origin ({origin.decode('latin-1')!r}) sent "
                                           "this request; browsers may not change this server's state")
        await self.app(scope, receive, send)

    def _same_site(self, origin: str, host: tuple[str, int | None] | None) -> bool:
        """The page that sent it is the server's own (same name and port), or allowed_hosts lists its name."""
        try:
            parts = urlsplit(origin)
            name, port = (parts.hostname or "").rstrip("."), parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        if not name or parts.scheme not in _DEFAULT_PORTS:  # "null" (sandboxed or file:// pages), garbage
            return False
        if host is not None and name == host[0] and port == (host[1] or _DEFAULT_PORTS[parts.scheme]):
            return True
        return self.policy.listed(name)
