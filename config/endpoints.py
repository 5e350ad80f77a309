"""Router endpoints that follow DNS: ``dns+tcp://NAME:PORT`` is every address NAME has
(its IPv4 ones, or its IPv6 ones if it has no IPv4 address).

A Kubernetes headless service (or any name with several A/AAAA records) lists the routers
that are up now; gateways and workers resolve it every ``router_dns_interval`` seconds
and connect to what joined, drop what left, without a restart. Plain ``tcp://``,
``ipc://`` and ``inproc://`` entries are one router each, as always. Resolution is a
blocking ``getaddrinfo``: callers run ``RouterEndpoints.resolve`` off their event loop
(the gateway in an executor, the worker in ``ResolverThread``). A name that stops
resolving keeps its last known addresses, so a DNS outage never empties the pool.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading

from config.lists import endpoint_list

log = logging.getLogger(__name__)

DNS_SCHEME = "dns+tcp://"


def parse_dns_endpoint(endpoint: str) -> tuple[str, int] | None:
    """``dns+tcp://NAME:PORT`` -> (NAME, PORT); None for any other scheme. ValueError if it
    is dns+tcp but NAME or PORT is unusable (the settings check reports it)."""
    if not endpoint.startswith(DNS_SCHEME):
        return None
    name, sep, port = endpoint[len(DNS_SCHEME):].rpartition(":")
    if name.startswith("[") and name.endswith("]"):  # an IPv6 literal, as in URLs
        name = name[1:-1]
    if not sep or not name or "/" in name or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{endpoint!r} is not dns+tcp://NAME:PORT")
    return name, int(port)


def uses_dns(setting: str) -> bool:
    """Whether a ``frontend``/``backend`` value names routers by DNS."""
    return any(e.startswith(DNS_SCHEME) for e in endpoint_list(setting))


def tcp_endpoint(address: str, port: int) -> str:
    """The ZeroMQ endpoint of one address: IPv6 in brackets (the socket then needs
    ``zmq.IPV6``, see ``wants_ipv6``)."""
    return f"tcp://[{address}]:{port}" if ":" in address else f"tcp://{address}:{port}"


def wants_ipv6(endpoint: str) -> bool:
    """A ``tcp://[ADDR]:PORT`` endpoint: ZeroMQ connects/binds it only with IPV6 on."""
    return endpoint.startswith("tcp://[")


def resolve_name(name: str, port: int) -> list[str]:
    """The addresses ``name`` resolves to now, deduplicated, in numeric order, as
    ``tcp://`` endpoints: its IPv4 ones (A) if it has any, else its IPv6 ones (AAAA). One
    family only: a dual-stack router has an address in each, and as two routers a worker
    would connect to it twice with one identity (each connection ending the other).
    Raises OSError (or UnicodeError for a malformed name) when it does not resolve."""
    infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    addresses = {ipaddress.ip_address(str(info[4][0])) for info in infos
                 if info[0] in (socket.AF_INET, socket.AF_INET6)}
    family = min((a.version for a in addresses), default=4)
    ordered = sorted((a for a in addresses if a.version == family), key=int)
    return [tcp_endpoint(str(a), port) for a in ordered]


class RouterEndpoints:
    """The routers one ``frontend``/``backend`` setting names now; thread-safe."""

    def __init__(self, setting: str) -> None:
        self.entries = endpoint_list(setting)
        self.dynamic = any(e.startswith(DNS_SCHEME) for e in self.entries)
        self._known: dict[str, list[str]] = {}  # dns entry -> last addresses it had
        self._failing: set[str] = set()  # dns entries whose failure was logged
        self._lock = threading.Lock()

    def current(self) -> list[str]:
        """The endpoints as last resolved, in setting order, each once."""
        with self._lock:
            found: list[str] = []
            for entry in self.entries:
                plain = [] if entry.startswith(DNS_SCHEME) else [entry]
                for endpoint in self._known.get(entry, plain):
                    if endpoint not in found:
                        found.append(endpoint)
            return found

    def resolve(self) -> list[str]:
        """Resolve every dns+tcp entry again (blocking) and return ``current()``."""
        for entry in self.entries:
            parsed = parse_dns_endpoint(entry)
            if parsed is None:
                continue
            try:
                addresses = resolve_name(*parsed)
            except (OSError, UnicodeError) as exc:
                if entry not in self._failing:  # once per outage, not every interval
                    log.warning("cannot resolve %s (%s): keeping its last %d routers",
                                entry, exc, len(self._known.get(entry, [])))
                    self._failing.add(entry)
                with self._lock:
                    self._known.setdefault(entry, [])
                continue
            if entry in self._failing:
                log.info("%s resolves again", entry)
                self._failing.discard(entry)
            with self._lock:
                if addresses != self._known.get(entry):
                    log.info("%s is now %s", entry, ", ".join(addresses) or "nothing")
                self._known[entry] = addresses
        return self.current()


def changes(have: list[str], want: list[str]) -> tuple[list[str], list[str]]:
    """(endpoints to add, endpoints to remove) to turn ``have`` into ``want``."""
    return [e for e in want if e not in have], [e for e in have if e not in want]


class ResolverThread:
    """Re-resolves ``endpoints`` every ``interval`` seconds on its own daemon thread, so a
    slow DNS server never stalls the thread that serves requests; ``take`` hands the
    newest set to that thread once per change."""

    def __init__(self, endpoints: RouterEndpoints, interval: float) -> None:
        self.endpoints = endpoints
        self.interval = interval
        self._stop = threading.Event()
        self._latest: list[str] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="router-dns", daemon=True)

    def start(self) -> None:
        if self.endpoints.dynamic:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> list[str] | None:
        """The endpoints if they changed since the last call, else None (cheap)."""
        with self._lock:
            latest, self._latest = self._latest, None
            return latest

    def _run(self) -> None:
        last = self.endpoints.current()
        while not self._stop.wait(self.interval):
            try:
                now = self.endpoints.resolve()
            except Exception:  # never let one bad answer end the following
                log.exception("resolving the routers' names failed")
                continue
            if now != last:
                with self._lock:
                    self._latest = last = now
