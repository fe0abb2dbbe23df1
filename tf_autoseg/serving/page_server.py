"""The naming page's HTTP server, apart from what it serves: which names it answers to, how
many connections it serves and for how long, and clients that go away.

- `host_names(host)`: the names a request's `Host` (and a save's `Origin`) may carry: the
  address the server was asked to bind; on loopback the loopback names; elsewhere also this
  machine's host name, full name and addresses (`machine_names`). A DNS-rebinding page's own
  name is refused on loopback and off it (`--host=0.0.0.0` answered any Host).
- `bind(host, port, handler)`: a `ThreadingHTTPServer` that gives at most `MAX_CONNECTIONS`
  connections a thread (2,000 idle connections made 2,000 threads) and logs a client gone
  mid-request (a BrokenPipe, a reset, `IDLE_SECONDS` of silence, the handler's timeout) as
  one debug line, not a traceback.

Standard library (and absl's logging) only.
"""

import ipaddress
import socket
import sys
import threading
from http.server import ThreadingHTTPServer

from absl import logging

MAX_CONNECTIONS = 64  # served at once; more are closed at once rather than given a thread
IDLE_SECONDS = 30  # a connection silent this long (no request, or a body that stops) is closed
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_WILDCARDS = ("", "0.0.0.0", "::")


class _Server(ThreadingHTTPServer):
    """A threading server that serves at most `MAX_CONNECTIONS` connections at once and logs
    a client that went away as one debug line (http.server prints a traceback)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):  # full: no thread for an idle crowd
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):  # BrokenPipe, reset, idle
            logging.debug("%s went away: %s", client_address[0], type(error).__name__)
        else:
            logging.warning("A request from %s failed: %s: %s", client_address[0],
                            type(error).__name__, error)  # fmt: skip


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def is_loopback(host):
    """Whether `host` (a name or an address, IPv6 in brackets or not) is this machine's
    loopback: only programs of this machine reach a server bound there."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def machine_names():
    """This machine's names and addresses as a browser may write them in `Host`: its host
    name, full name, the addresses they resolve to and the address it reaches out from."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    for family, target in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.connect((target, 1))  # UDP: nothing is sent
                names.add(probe.getsockname()[0])
        except OSError:
            pass
    return {name.lower().split("%")[0] for name in names if name}


def host_names(host):
    """The names a request's `Host` may carry for a server bound to `host`: that address; on
    loopback, the loopback names; elsewhere also the machine's own names (`machine_names`),
    and on a wildcard address (0.0.0.0, ::) the loopback names too. A name outside this set
    (a DNS-rebinding page's own) is refused, on loopback and off it."""
    bound = host.strip("[]").lower()
    names = {bound} - {""}
    if is_loopback(bound) or bound in _WILDCARDS:
        names |= set(_LOOPBACK_NAMES)
    if not is_loopback(bound):
        names |= machine_names()
    return names - set(_WILDCARDS)


def name_of(host_header):
    """The host part of a `Host` header ("name:port", "[v6]:port"), lower case."""
    text = (host_header or "").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else ""
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def bind(host, port, handler):
    """A `_Server` (IPv6 for an IPv6 `host`) bound to (`host`, `port`), serving `handler`.

    Raises:
        OSError: the address cannot be bound (a port in use: errno EADDRINUSE; an address not
            of this machine: EADDRNOTAVAIL, or `socket.gaierror` for one that does not resolve).
    """
    server_class = _IPv6Server if ":" in host.strip("[]") else _Server
    return server_class((host.strip("[]"), port), handler)
