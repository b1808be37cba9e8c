"""Decode the lines ExaBGP writes to its API process into bgpnet events.

Sans-io: bytes in, events out (the classes in ``bgpnet.model``). Nothing here reads a
pipe, sleeps or logs, so the agent decides what to do with each event and how loudly.

Rules:
- Every line is untrusted, because ExaBGP builds its JSON with string formatting and a
  relay sits between it and us. A line that cannot be used becomes one ``Malformed``
  event carrying the reason and an excerpt of at most 120 characters. No input makes
  the decoder raise, and it keeps decoding the lines that follow.
- A line is used whole or not at all: one bad prefix or next hop in an UPDATE turns
  the line into ``Malformed`` and none of its routes are reported.
- Message types the agent does not use (keepalive, open, refresh, ...) and address
  families other than IPv4/IPv6 unicast are ignored and counted in ``stats.ignored``.
- ``done`` and ``error`` (ExaBGP's replies to the commands we write) become ``Ack``.

Theory of operation. ``feed`` appends bytes to a buffer and cuts it at each b"\\n".
``decode_line`` parses one line with ``json.loads`` and dispatches on the message
``type`` through ``_HANDLERS``. Within one UPDATE the withdraws come before the
announces, the order in which RFC 4271 section 6.3 processes them, and there is one
``Announce`` per (peer, next hop). Checking the JSON against a schema library was
rejected: the shape we use is small, and hand-written checks give errors that name the
exact field.

The JSON shapes below are those of ExaBGP 5.0.15 (``reactor/api/response/json.py``,
recorded in ``tests/fixtures/exabgp``):
  state:        neighbor.state = "connected" | "up" | "down", neighbor.reason on down
  update:       neighbor.message.update.{attribute, announce, withdraw}
                announce: {"ipv4 unicast": {NEXTHOP: [{"nlri": PREFIX}, ...]}}
                withdraw: {"ipv4 unicast": [{"nlri": PREFIX}, ...]}
  end-of-RIB:   neighbor.message.eor = {"afi": "ipv4", "safi": "unicast"}
  notification: neighbor.notification = {code, subcode, data, message}
An IPv6 UPDATE whose MP_REACH next hop carries a global and a link-local address is
printed with each prefix listed twice, once under each address. The decoder keeps the
global next hop and drops the link-local duplicate.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bgpnet.model import (
    Ack,
    Address,
    Announce,
    EndOfRib,
    Event,
    Malformed,
    Notification,
    PeerId,
    PeerOpen,
    PeerState,
    Prefix,
    Withdraw,
    parse_address,
    parse_prefix,
)

# An UPDATE of 1,000 /24 prefixes is about 30 KB of JSON. The largest BGP message
# (RFC 8654, 65,535 bytes) encodes at most about 65,000 prefixes, which ExaBGP prints
# in an estimated 2-3 MB, so this limit keeps every UPDATE a peer can send.
MAX_LINE_BYTES = 4 * 1024 * 1024
EXCERPT_CHARS = 120

_FAMILIES = {"ipv4 unicast": 4, "ipv6 unicast": 6}
# A strict dotted-quad IPv4 prefix (no leading zeros, length 0-32): the form ExaBGP
# prints. Text that does not match goes through ipaddress's own parser and errors.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_PREFIX = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}/(?:3[0-2]|[12]?[0-9])")
_ACKS = {"done": True, "error": False}


class _Invalid(Exception):
    """A line has a field of the wrong shape; the message names the field."""


@dataclass
class DecoderStats:
    """Counters of what the decoder has seen since it was created."""

    lines: int = 0
    events: int = 0
    malformed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)


class Decoder:
    """Split a byte stream into lines and decode each one into events."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self.stats = DecoderStats()
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to contain no b"\n"
        self._discarding = False  # inside an overlong line, dropping bytes up to b"\n"

    @property
    def pending(self) -> int:
        """Number of buffered bytes of a line whose newline has not arrived yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Buffer ``data`` and return the events of every line it completes."""
        events: list[Event] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._scanned = 0
            if self._discarding:
                self._discarding = False
            else:
                events.extend(self.decode_line(line))

        if self._discarding:
            self._buffer.clear()
        elif len(self._buffer) > self.max_line_bytes:
            excerpt = _excerpt(bytes(self._buffer[:EXCERPT_CHARS]))
            self._buffer.clear()
            self._discarding = True
            self.stats.lines += 1
            events.append(self._malformed(
                f"line longer than {self.max_line_bytes} bytes, discarded up to its newline",
                excerpt))
        self._scanned = len(self._buffer)
        return events

    def decode_line(self, line: str | bytes) -> list[Event]:
        """Decode one line, without its newline, into zero or more events."""
        self.stats.lines += 1
        if len(line) > self.max_line_bytes:
            return [self._malformed(f"line longer than {self.max_line_bytes} bytes",
                                    _excerpt(line[:EXCERPT_CHARS]))]
        if isinstance(line, bytes):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return [self._malformed(f"not UTF-8 ({exc.reason} at byte {exc.start})",
                                        _excerpt(line))]
        else:
            text = line
        text = text.strip()

        if not text:
            self.stats.ignored["empty-line"] += 1
            return []
        if text in _ACKS:
            return self._emit([Ack(ok=_ACKS[text], text=text)])
        if text == "shutdown":  # ExaBGP's reply to a command it got while exiting
            self.stats.ignored["answer-shutdown"] += 1
            return []

        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return [self._malformed(f"not JSON ({exc})", _excerpt(text))]
        try:
            events = self._decode_message(message)
        except _Invalid as exc:
            return [self._malformed(str(exc), _excerpt(text))]
        return self._emit(events)

    def _decode_message(self, message: Any) -> list[Event]:
        _expect(message, dict, "message")
        if "answer" in message:  # the JSON form of done/error
            answer = _expect(message["answer"], str, "answer")
            if answer not in _ACKS:
                self.stats.ignored[f"answer-{answer}"] += 1
                return []
            return [Ack(ok=_ACKS[answer], text=answer)]

        kind = _expect(message.get("type"), str, "type")
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.stats.ignored[kind] += 1
            return []
        return handler(self, message)

    def _state(self, message: dict[str, Any]) -> list[Event]:
        neighbor = _expect(message.get("neighbor"), dict, "neighbor")
        peer = _peer(neighbor)
        state = _expect(neighbor.get("state"), str, "neighbor.state")
        reason = _expect(neighbor.get("reason", ""), str, "neighbor.reason")
        return [PeerState(peer=peer, state=state, reason=reason)]

    def _notification(self, message: dict[str, Any]) -> list[Event]:
        neighbor = message.get("neighbor")
        if neighbor is None:
            # {"type": "notification", "notification": "shutdown"}: ExaBGP is exiting.
            self.stats.ignored["notification-shutdown"] += 1
            return []
        neighbor = _expect(neighbor, dict, "neighbor")
        peer = _peer(neighbor)
        body = _expect(neighbor.get("notification"), dict, "neighbor.notification")
        code = _expect_int(body.get("code"), "neighbor.notification.code")
        subcode = _expect_int(body.get("subcode"), "neighbor.notification.subcode")
        text = _expect(body.get("message", ""), str, "neighbor.notification.message")
        data = _expect(body.get("data", ""), str, "neighbor.notification.data")
        # The RFC 8203 shutdown communication is text, so prefer it over the hex dump,
        # and ExaBGP prints empty data as "0x".
        if data == "0x":
            data = ""
        return [Notification(peer=peer, code=code, subcode=subcode, data=text or data)]

    def _open(self, message: dict[str, Any]) -> list[Event]:
        neighbor = _expect(message.get("neighbor"), dict, "neighbor")
        peer = _peer(neighbor)
        if neighbor.get("direction", "receive") != "receive":
            self.stats.ignored["open-send"] += 1
            return []
        body = _expect(neighbor.get("open"), dict, "neighbor.open")
        capabilities = _expect(body.get("capabilities", {}), dict, "open.capabilities")
        # Capability code 64 is graceful restart (RFC 4724 section 3).
        graceful = capabilities.get("64")
        if graceful is None:
            return [PeerOpen(peer=peer, restart_time=None)]
        graceful = _expect(graceful, dict, "open.capabilities.64")
        restart_time = _expect_int(graceful.get("time", 0), "open.capabilities.64.time")
        flags = _expect(graceful.get("address-family-flags", {}), dict,
                        "open.capabilities.64.address-family-flags")
        # ExaBGP names families "ipv4/unicast" here and "ipv4 unicast" in updates.
        families = tuple(sorted(str(family).replace("/", " ") for family in flags))
        return [PeerOpen(peer=peer, restart_time=restart_time, restart_families=families)]

    def _update(self, message: dict[str, Any]) -> list[Event]:
        neighbor = _expect(message.get("neighbor"), dict, "neighbor")
        peer = _peer(neighbor)
        direction = neighbor.get("direction", "receive")
        if direction != "receive":
            self.stats.ignored[f"update-{direction}"] += 1
            return []
        body = _expect(neighbor.get("message"), dict, "neighbor.message")

        if "eor" in body:
            eor = _expect(body["eor"], dict, "neighbor.message.eor")
            afi = _expect(eor.get("afi"), str, "neighbor.message.eor.afi")
            safi = _expect(eor.get("safi"), str, "neighbor.message.eor.safi")
            return [EndOfRib(peer=peer, afi=afi, safi=safi)]

        update = _expect(body.get("update"), dict, "neighbor.message.update")
        events: list[Event] = []
        withdraw = _expect(update.get("withdraw", {}), dict, "update.withdraw")
        for family, nlris in withdraw.items():
            version = self._family_version(family, "withdraw")
            if version is None:
                continue
            where = f"update.withdraw[{family!r}]"
            prefixes = _prefixes(nlris, version, where)
            if prefixes:
                events.append(Withdraw(peer=peer, prefixes=prefixes))

        announce = _expect(update.get("announce", {}), dict, "update.announce")
        if announce:
            attributes = _expect(update.get("attribute", {}), dict, "update.attribute")
            originator = attributes.get("originator-id")
            originator_id = None
            if originator is not None:
                originator_id = _address(originator, "update.attribute.originator-id")
            as_path = _as_path(attributes.get("as-path", {}))
            for family, by_nexthop in announce.items():
                version = self._family_version(family, "announce")
                if version is None:
                    continue
                where = f"update.announce[{family!r}]"
                groups = self._nexthop_groups(by_nexthop, version, where)
                for nexthop, prefixes in groups:
                    events.append(Announce(peer=peer, nexthop=nexthop, prefixes=prefixes,
                                           originator_id=originator_id, as_path=as_path))
        return events

    def _family_version(self, family: str, action: str) -> int | None:
        version = _FAMILIES.get(family)
        if version is None:
            self.stats.ignored[f"{action}-{family}"] += 1
        return version

    def _nexthop_groups(self, by_nexthop: Any, version: int,
                        where: str) -> list[tuple[Address, tuple[Prefix, ...]]]:
        _expect(by_nexthop, dict, where)
        groups: list[tuple[Address, tuple[Prefix, ...]]] = []
        for text, nlris in by_nexthop.items():
            nexthop = _address(text, f"{where} next hop")
            groups.append((nexthop, _prefixes(nlris, version, f"{where}[{text!r}]")))

        link_local = [g for g in groups if g[0].version == 6 and g[0].is_link_local]
        if not link_local or len(link_local) == len(groups):
            return groups
        # Drop each prefix that is also listed under a global next hop, as the module
        # docstring explains. A link-local next hop alone is kept for the policy to judge.
        with_global = {p for nexthop, prefixes in groups if nexthop not in
                       {g[0] for g in link_local} for p in prefixes}
        kept: list[tuple[Address, tuple[Prefix, ...]]] = []
        for nexthop, prefixes in groups:
            if nexthop.version == 6 and nexthop.is_link_local:
                remaining = tuple(p for p in prefixes if p not in with_global)
                self.stats.ignored["link-local-duplicate"] += len(prefixes) - len(remaining)
                if not remaining:
                    continue
                prefixes = remaining
            kept.append((nexthop, prefixes))
        return kept

    def _emit(self, events: list[Event]) -> list[Event]:
        self.stats.events += len(events)
        return events

    def _malformed(self, reason: str, excerpt: str) -> Malformed:
        self.stats.malformed += 1
        self.stats.events += 1
        return Malformed(reason=reason, excerpt=excerpt)


_HANDLERS: dict[str, Callable[[Decoder, dict[str, Any]], list[Event]]] = {
    "state": Decoder._state,
    "update": Decoder._update,
    "notification": Decoder._notification,
    "open": Decoder._open,
}


def _excerpt(line: str | bytes) -> str:
    if isinstance(line, bytes):
        line = line[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return line[:EXCERPT_CHARS]


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Invalid(f"{where}: expected {_JSON_NAMES[kind]}, got {_shown(value)}")
    return value


def _expect_int(value: Any, where: str) -> int:
    return _expect(value, int, where)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _peer(neighbor: dict[str, Any]) -> PeerId:
    address = _expect(neighbor.get("address"), dict, "neighbor.address")
    return PeerId(_address(address.get("peer"), "neighbor.address.peer"))


def _address(value: Any, where: str) -> Address:
    _expect(value, str, where)
    try:
        return parse_address(value)
    except ValueError:
        raise _Invalid(f"{where}: {_shown(value)} is not an IP address") from None


def _prefixes(nlris: Any, version: int, where: str) -> tuple[Prefix, ...]:
    _expect(nlris, list, where)
    prefixes = []
    for nlri in nlris:
        # ExaBGP prints {"nlri": "10.0.0.0/24"}, or the bare string with api.compact.
        text = nlri.get("nlri") if isinstance(nlri, dict) else nlri
        _expect(text, str, f"{where} nlri")
        try:
            prefix = _parse_prefix(text)
        except ValueError:
            raise _Invalid(f"{where}: {_shown(text)} is not a prefix") from None
        if prefix.version != version:
            raise _Invalid(f"{where}: {text} is not an IPv{version} prefix")
        prefixes.append(prefix)
    return tuple(prefixes)


def _parse_prefix(text: str) -> Prefix:
    """Parse a prefix like ``parse_prefix``, with a faster path for IPv4.

    Parsing dominated the agent's CPU time for large UPDATEs: building the network
    from an integer skips ipaddress's string parsing and costs about 60% as much.
    """
    if _IPV4_PREFIX.fullmatch(text):
        address, _, length_text = text.partition("/")
        length = int(length_text)
        value = int.from_bytes(socket.inet_aton(address), "big")
        if value & ((1 << (32 - length)) - 1) == 0:
            return _ipv4_network(value, length)
    return parse_prefix(text)  # IPv6, or invalid text: raises ValueError with the reason


# (netmask, prefix length) for each IPv4 prefix length. ipaddress caches these too, so
# every network of one length shares one netmask object.
_IPV4_NETMASKS = [ipaddress.IPv4Network._make_netmask(length) for length in range(33)]


class _DecodedIPv4Network(ipaddress.IPv4Network):
    """An ``IPv4Network`` with a faster ``__hash__`` and ``__eq__``, equal to the base's.

    The RIB, the dirty set, the plan and the kernel map hash each learned prefix about
    nine times, and CPython 3.11's ``ipaddress`` computes every hash in Python through
    two ``__int__`` calls. Reading the stored integers directly gives the same hash, so
    these networks and plain ones (from a kernel dump) find each other in one dict. With
    Python 3.11.7 a hash took 0.07 instead of 0.22 us, and a comparison 0.07 instead of
    0.29 us. Equality with any other class uses the base's.
    """

    __slots__ = ()

    def __hash__(self) -> int:
        # The base returns hash() of this integer, which is the integer itself below 2**61.
        return self.network_address._ip ^ self.netmask._ip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is _DecodedIPv4Network:
            return (self.network_address._ip == other.network_address._ip  # type: ignore[attr-defined]
                    and self._prefixlen == other._prefixlen)  # type: ignore[attr-defined]
        return super().__eq__(other)

    def __repr__(self) -> str:
        return f"IPv4Network({str(self)!r})"


def _build_ipv4_network(value: int, length: int) -> ipaddress.IPv4Network:
    """Build ``IPv4Network((value, length))`` for a value without host bits, in less memory.

    The constructor gives every /32 its own ``hosts`` function (about 200 bytes, and a
    bound method for a /31), and it parses its argument again. Setting the three
    attributes that CPython 3.11's ``ipaddress`` stores cuts a /32 from about 420 to
    180 bytes and takes about 40% of the time. The result is a ``_DecodedIPv4Network``.
    ``_fast_networks_match`` checks at import that it equals the constructor's and hashes
    the same; if not, the constructor is used.

    NOTE: on such a network ``hosts()`` is the class's method, which in Python 3.11
    returns no host for a /32 and both addresses for a /31, where the constructor's
    returns the one address and also both. Nothing in bgpnet calls it on learned routes.
    """
    network = object.__new__(_DecodedIPv4Network)
    # The address is built the same way, without the range check of its constructor:
    # a value from inet_aton fits in 32 bits.
    address = object.__new__(ipaddress.IPv4Address)
    address._ip = value
    network.network_address = address
    network.netmask, network._prefixlen = _IPV4_NETMASKS[length]
    return network


def _constructed_ipv4_network(value: int, length: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((value, length))


def _fast_networks_match() -> bool:
    """Return True when ``_build_ipv4_network`` gives the constructor's networks here."""
    samples = [(0, 0), (0x0A000000, 8), (0x0AF40100, 24), (0xC0A80002, 31), (0x0A000001, 32)]
    for value, length in samples:
        try:
            fast = _build_ipv4_network(value, length)
            slow = _constructed_ipv4_network(value, length)
            same = (fast == slow and hash(fast) == hash(slow) and str(fast) == str(slow)
                    and fast.prefixlen == slow.prefixlen and fast.netmask == slow.netmask
                    and fast.broadcast_address == slow.broadcast_address
                    and fast.supernet() == slow.supernet() and slow in {fast: None}
                    and fast in {slow: None} and slow == fast
                    and fast.network_address == slow.network_address
                    and hash(fast.network_address) == hash(slow.network_address)
                    and fast == _build_ipv4_network(value, length)
                    and fast != _build_ipv4_network(value, length + 1 if length < 32 else 31))
        except (AttributeError, TypeError, ValueError):
            return False
        if not same:
            return False
    return True


_ipv4_network = _build_ipv4_network if _fast_networks_match() else _constructed_ipv4_network


def _as_path(value: Any) -> tuple[int, ...]:
    """Flatten ExaBGP's as-path object so that len() is the RFC 4271 path length.

    RFC 4271 section 9.1.2.2 counts an AS_SET as one AS, and RFC 5065 section 5.3
    does not count confederation segments, so an AS_SET contributes only its
    smallest member and confederation segments contribute nothing.

    NOTE: ExaBGP 5.0.15 prints confederation segments as "as-sequence" too, so with
    that version they are counted like ordinary AS numbers.
    """
    _expect(value, dict, "update.attribute.as-path")
    path: list[int] = []
    for position in sorted(value, key=_segment_position):
        where = f"update.attribute.as-path[{position!r}]"
        segment = _expect(value[position], dict, where)
        element = _expect(segment.get("element"), str, f"{where}.element")
        members = _expect(segment.get("value"), list, f"{where}.value")
        asns = [_expect_int(asn, f"{where}.value") for asn in members]
        if element == "as-sequence":
            path.extend(asns)
        elif element == "as-set":
            if asns:
                path.append(min(asns))
        elif element not in ("confed-sequence", "confed-set"):
            raise _Invalid(f"{where}.element: unknown segment type {_shown(element)}")
    return tuple(path)


def _segment_position(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise _Invalid(f"update.attribute.as-path: {_shown(key)} is not a position") from None
