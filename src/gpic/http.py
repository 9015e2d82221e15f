"""The HTTP client pieces the fetch stage and the collectors share, on urllib3: one Retry-After
parser, one full-jitter backoff, one rate limiter, and connection pools whose every new
connection passes the address check.

urllib3 keeps the connections alive, verifies TLS, times out connects and reads and follows
(or, for the fetch stage, reports) redirects. The retry loops stay with the callers: a fetch
attempt spans redirects and a body read that urllib3's Retry never sees, a collector retries
answers that only it can judge (Commons' maxlag in a 200), and both sleep through a sleep the
tests replace and cap a Retry-After by their own config.

Kept by hand, as no library does it: the resolve-check-connect guard. A new connection
resolves its host once, refuses it unless every address is globally routable (or inside the
allowed networks) and connects to the address it checked, so DNS cannot answer differently
between check and connect, for the first request and every redirect target alike."""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ProtocolError, SSLError

# NAT64's well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Symptoms of a connection the server closed before answering (a kept-alive one it dropped)
DISCONNECTED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, ssl.SSLEOFError,
                http.client.RemoteDisconnected)


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After in seconds from now: delta-seconds or an HTTP date (0 when it has passed);
    None when absent or unreadable. A date without a zone is read as UTC: every HTTP date is
    GMT (RFC 9110, 5.6.7), and its asctime form carries no zone at all, so reading it as local
    time would shift a pause by the machine's offset."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now())


def full_jitter(retry: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Seconds before retry `retry` (1 for the first): uniform in [0, min(cap_s, base_s *
    2^(retry - 1))]. Full jitter spreads clients that failed together over the whole window;
    urllib3's backoff_jitter only adds a little noise to the same exponential step, from the
    module's generator, which a test cannot seed."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(retry - 1, 0), 64))
    return (rng or random).uniform(0, ceiling)


class RateLimit:
    """At most `per_second` requests per second on average, `burst` at once (a token bucket).
    Thread-safe: a caller sleeps holding the lock, so concurrent callers take their turns one
    interval apart. Kept by hand rather than pyrate-limiter: the callers and their tests drive
    it with their own clock and sleep, and it returns the seconds it waited."""

    def __init__(self, per_second: float, burst: int = 1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = per_second, burst
        self.tokens, self.clock, self.sleep = float(burst), clock, sleep
        self.last = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Wait for a token; return the seconds waited. Idle time refills at most `burst`."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            wait = (1 - self.tokens) / self.rate
            self.sleep(wait)
            # the turn starts when the sleep ends, as the clock says (a sleep that only records
            # leaves it where it was)
            self.last, self.tokens = self.clock(), 0.0
            return wait


# ---------------------------------------------------------------------------
# The address guard
# ---------------------------------------------------------------------------

class Refused(Exception):
    """A host the client will not connect to; `retryable`: a DNS failure may pass next time,
    a refused address or a bad name will not."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """`fetch.allow_networks` as networks; a bad entry stops the fetch naming it (the schema
    only checks its characters)."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value))
        except ValueError as exc:
            raise ValueError(f"config fetch.allow_networks: {value!r} is not a network: {exc}") from None
    return tuple(networks)


def address_allowed(address: str, networks: tuple[Network, ...]) -> bool:
    """True for an address inside `networks` or globally routable; otherwise a manifest or a
    redirect could make the fetcher probe the cluster's own network (private, loopback,
    link-local, shared 100.64/10, multicast, reserved). An IPv4 address written as IPv6
    (::ffff:a.b.c.d, 6to4, NAT64) must pass as IPv4 too."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in network for network in networks):
        return True
    judged = [ip]
    if ip.version == 6:
        judged += [ip.sixtofour] if ip.sixtofour else []
        judged += [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)] if ip in NAT64 else []
    # is_global (Python 3.11) still counts multicast and IPv6 site-local as global
    return all(one.is_global and not one.is_multicast and not (one.version == 6 and one.is_site_local)
               for one in judged)


def resolve(host: str, port: int, networks: tuple[Network, ...]) -> list[tuple]:
    """The host's addresses (getaddrinfo tuples), resolved once; refused when any of them is
    not allowed, as a host cannot choose which of its addresses the connection uses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Refused(f"dns error: {host}: {exc}", retryable=True) from None
    except UnicodeError as exc:  # a label IDNA cannot encode: asking again will not help
        raise Refused(f"bad host name: {host}: {exc}") from None
    if not infos:
        raise Refused(f"dns error: {host}: no address", retryable=True)
    for info in infos:
        if not address_allowed(info[4][0], networks):
            raise Refused(f"non-public address: {info[4][0]} for {host}")
    return infos


class CheckedConnection(HTTPConnection):
    """An HTTP connection to an address that passed the check: urllib3's `_new_conn` (its hook
    for making the socket) connects to what `resolve` checked, so nothing looks the host up
    again between check and connect. `opened` is called for every socket made."""

    def __init__(self, *args, networks: tuple[Network, ...] = (), opened: Callable[[], None] | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.networks, self.opened = networks, opened

    def _new_conn(self) -> socket.socket:
        """socket.create_connection on the checked addresses, in the resolver's order."""
        if self.opened:
            self.opened()
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        error: OSError | None = None
        for family, kind, proto, _, sockaddr in resolve(self.host, self.port, self.networks):
            sock = socket.socket(family, kind, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
                return sock
            except TimeoutError as exc:
                sock.close()
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                sock.close()
                error = exc
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")


class CheckedHTTPSConnection(CheckedConnection, HTTPSConnection):
    """HTTPS over a checked address; TLS still wraps with server_hostname = the URL's host, so
    SNI and the certificate check use the name, not the address."""


class CheckedPool(HTTPConnectionPool):
    ConnectionCls = CheckedConnection


class CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


class CheckedPools:
    """One pool of up to `per_host` kept-alive connections per scheme, host and port, every new
    connection through the address check. Not a PoolManager: its pool keys accept only
    urllib3's own connection arguments, and the check needs the networks. Proxies are never
    used: a proxy would make the connection, and the check would see the proxy's address."""

    def __init__(self, networks: tuple[Network, ...], tls: ssl.SSLContext, per_host: int, timeout_s: float):
        self.networks, self.tls, self.per_host = networks, tls, per_host
        self.timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._pools: dict[tuple[str, str, int], HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self.connections = 0  # sockets opened so far, for tests and the benchmark

    def _opened(self) -> None:
        with self._lock:
            self.connections += 1

    def pool(self, scheme: str, host: str, port: int) -> HTTPConnectionPool:
        key = (scheme, host, port)
        with self._lock:
            if key not in self._pools:
                extra = {"ssl_context": self.tls} if scheme == "https" else {}
                # block=False: the caller's per-host slots already bound the requests in flight
                self._pools[key] = (CheckedHTTPSPool if scheme == "https" else CheckedPool)(
                    host, port, timeout=self.timeout, maxsize=self.per_host, block=False, retries=False,
                    networks=self.networks, opened=self._opened, **extra)
            return self._pools[key]

    def idle(self) -> int:
        """Connections kept open in the pools, waiting for a request."""
        with self._lock:
            pools = list(self._pools.values())
        return sum(1 for pool in pools for conn in list(pool.pool.queue if pool.pool else ())
                   if conn is not None and conn.is_connected)

    def close(self) -> None:
        """Close the idle connections; the pools can still be used (they open new ones)."""
        with self._lock:
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()


def disconnected(exc: BaseException) -> bool:
    """True when urllib3's error says the server closed the connection before answering."""
    if isinstance(exc, ProtocolError | SSLError):
        return any(isinstance(arg, DISCONNECTED) for arg in exc.args)
    return isinstance(exc, DISCONNECTED)


def cause(exc: BaseException) -> BaseException:
    """The socket, TLS or http.client error that urllib3 wrapped in a ProtocolError or SSLError."""
    while isinstance(exc, ProtocolError | SSLError) and exc.args and isinstance(exc.args[-1], BaseException):
        exc = exc.args[-1]
    return exc


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response not read to its end, and its connection; the pool gets the slot back
    (urllib3 reconnects it on its next use). A response read to its end was already released."""
    response.close()
    response.release_conn()


def api_pool(headers: dict[str, str], timeout_s: float, redirects: int = 5) -> urllib3.PoolManager:
    """A client for a public API: kept-alive connections, redirects followed, no retries (the
    caller's loop retries, through its own sleep); Retry-After is left to the caller, which
    caps it."""
    retries = urllib3.Retry(total=None, connect=0, read=0, other=0, status=0, redirect=redirects,
                            respect_retry_after_header=False)
    return urllib3.PoolManager(headers=headers, retries=retries,
                               timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
