"""Malformed ExaBGP output interleaved with valid lines, through the decoder and the RIB.

A seeded generator makes 100 malformed or truncated lines (15 kinds) and 20 lines of
message types the agent does not use, and mixes them into a stream of valid UPDATEs.
The stream goes through ``Decoder.feed`` whole, in random chunks and byte by byte,
and every event goes to a ``Rib`` the way the agent dispatches it. Expected: every
valid change is applied, each malformed line becomes exactly one ``Malformed`` event,
unknown types are only counted as ignored, and the last valid line is still applied.
"""

from __future__ import annotations

import ipaddress
import json
import random

import pytest

from bgpnet.bgp.decoder import Decoder
from bgpnet.bgp.policy import ImportPolicy
from bgpnet.bgp.rib import Rib
from bgpnet.model import Announce, Malformed, PeerState, Withdraw

PEER = "192.168.1.12"
NEXT_HOP = "192.168.1.12"
MALFORMED_COUNT = 100
UNKNOWN_COUNT = 20


def _message(kind: str, neighbor: dict) -> dict:
    return {"exabgp": "5.0.0", "time": 0.0, "host": "test", "pid": 1, "ppid": 1, "counter": 1,
            "type": kind, "neighbor": {"address": {"local": "192.168.1.11", "peer": PEER},
                                       "asn": {"local": 64512, "peer": 64512}, **neighbor}}


def _announce(prefix: str) -> dict:
    return _message("update", {"direction": "receive", "message": {"update": {
        "attribute": {"origin": "igp", "local-preference": 100,
                      "as-path": {"0": {"element": "as-sequence", "value": [65001]}}},
        "announce": {"ipv4 unicast": {NEXT_HOP: [{"nlri": prefix}]}}}}})


def _withdraw(prefix: str) -> dict:
    return _message("update", {"direction": "receive", "message": {"update": {
        "withdraw": {"ipv4 unicast": [{"nlri": prefix}]}}}})


def _line(message) -> bytes:
    return json.dumps(message).encode()


def _nlri(message: dict) -> dict:
    return message["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"][NEXT_HOP][0]


def _set_nlri(value):
    def change(message):
        _nlri(message)["nlri"] = value
    return change


def _rename_next_hop(value):
    def change(message):
        announce = message["neighbor"]["message"]["update"]["announce"]
        announce["ipv4 unicast"] = {value: announce["ipv4 unicast"][NEXT_HOP]}
    return change


def _mutated(change):
    def make(rng: random.Random, prefix: str) -> bytes:
        message = _announce(prefix)
        change(message)
        return _line(message)
    return make


def _truncated(rng: random.Random, prefix: str) -> bytes:
    line = _line(_announce(prefix))
    return line[:rng.randrange(1, len(line) - 1)]


def _not_utf8(rng: random.Random, prefix: str) -> bytes:
    line = _line(_announce(prefix))
    cut = rng.randrange(1, len(line) - 1)
    return line[:cut] + b"\xff\xfe" + line[cut:]


def _no_state(rng: random.Random, prefix: str) -> bytes:
    return _line(_message("state", {}))


def _withdraw_not_list(rng: random.Random, prefix: str) -> bytes:
    message = _withdraw(prefix)
    message["neighbor"]["message"]["update"]["withdraw"]["ipv4 unicast"] = {"nlri": prefix}
    return _line(message)


def _delete_neighbor(message):
    del message["neighbor"]


def _set_peer(message):
    message["neighbor"]["address"]["peer"] = "999.1.1.1"


def _set_type(message):
    message["type"] = 5


def _announce_list(message):
    message["neighbor"]["message"]["update"]["announce"] = []


def _bad_segment(message):
    message["neighbor"]["message"]["update"]["attribute"]["as-path"]["0"]["element"] = "as-bogus"


# (label, maker): each maker returns one line that the decoder must report as Malformed.
MALFORMED_KINDS = [
    ("truncated", _truncated),
    ("not-utf8", _not_utf8),
    ("nlri-integer", _mutated(_set_nlri(5))),
    ("nlri-host-bits", _mutated(_set_nlri("10.244.5.1/24"))),
    ("nlri-ipv6-in-ipv4", _mutated(_set_nlri("fd00::/64"))),
    ("nlri-garbage", _mutated(_set_nlri("10.244.300.0/24"))),
    ("next-hop-garbage", _mutated(_rename_next_hop("not-an-address"))),
    ("neighbor-missing", _mutated(_delete_neighbor)),
    ("peer-garbage", _mutated(_set_peer)),
    ("type-integer", _mutated(_set_type)),
    ("announce-list", _mutated(_announce_list)),
    ("as-path-segment", _mutated(_bad_segment)),
    ("json-array", lambda rng, prefix: b"[1, 2, 3]"),
    ("plain-text", lambda rng, prefix: b"hello from a confused relay"),
    ("state-missing", _no_state),
    ("withdraw-not-list", _withdraw_not_list),
]

UNKNOWN_TYPES = ["keepalive", "refresh", "operational", "bogus-type", "signal"]


def _stream(seed: int) -> tuple[bytes, set[str], int]:
    """Return (stream, prefixes expected in the RIB, number of malformed lines)."""
    rng = random.Random(seed)
    valid = [_line(_message("state", {"state": "up"}))]
    announced = [f"10.244.{index}.0/24" for index in range(10, 70)]
    valid += [_line(_announce(prefix)) for prefix in announced]
    valid += [_line(_withdraw(prefix)) for prefix in announced[:10]]
    expected = set(announced[10:])

    bad = []
    for index in range(MALFORMED_COUNT):
        _label, make = MALFORMED_KINDS[index % len(MALFORMED_KINDS)]
        bad.append(make(rng, f"10.244.{100 + index}.0/24"))
    unknown = [_line(_message(UNKNOWN_TYPES[index % len(UNKNOWN_TYPES)], {}))
               for index in range(UNKNOWN_COUNT)]

    # Interleave: valid lines keep their order (withdraws after announces), the rest
    # land at random places, and the stream ends with one more valid announce.
    tags = ["valid"] * len(valid) + ["bad"] * len(bad) + ["unknown"] * len(unknown)
    rng.shuffle(tags)
    sources = {"valid": iter(valid), "bad": iter(bad), "unknown": iter(unknown)}
    lines = [next(sources[tag]) for tag in tags]
    lines.append(_line(_announce("10.244.200.0/24")))
    expected.add("10.244.200.0/24")
    return b"".join(line + b"\n" for line in lines), expected, len(bad)


def _chunks(stream: bytes, mode: str, rng: random.Random) -> list[bytes]:
    if mode == "whole":
        return [stream]
    if mode == "bytewise":
        return [stream[i:i + 1] for i in range(len(stream))]
    chunks, position = [], 0
    while position < len(stream):
        size = rng.randrange(1, 4096)
        chunks.append(stream[position:position + size])
        position += size
    return chunks


def _run(stream: bytes, mode: str) -> tuple[Decoder, Rib, int]:
    decoder = Decoder()
    policy = ImportPolicy(cluster_cidrs=(ipaddress.ip_network("10.244.0.0/16"),),
                          own_prefixes=(ipaddress.ip_network("10.244.1.0/24"),),
                          local_addresses=frozenset({ipaddress.ip_address("192.168.1.11")}))
    rib = Rib(policy, node="node01", router_id=ipaddress.ip_address("192.168.1.11"))
    malformed = 0
    for chunk in _chunks(stream, mode, random.Random(7)):
        for event in decoder.feed(chunk):
            if isinstance(event, Malformed):
                malformed += 1
            elif isinstance(event, (Announce, Withdraw, PeerState)):
                rib.apply(event)
    return decoder, rib, malformed


def test_generator_makes_enough_lines():
    _stream_bytes, _expected, bad = _stream(1)
    assert bad == MALFORMED_COUNT


@pytest.mark.parametrize("label,make", MALFORMED_KINDS, ids=[k for k, _ in MALFORMED_KINDS])
def test_kind_is_malformed(label, make):
    events = Decoder().decode_line(make(random.Random(3), "10.244.100.0/24"))
    assert [type(event) for event in events] == [Malformed]


@pytest.mark.parametrize("mode", ["whole", "chunks", "bytewise"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_valid_applied(mode, seed):
    stream, expected, _bad = _stream(seed)
    _decoder, rib, _malformed = _run(stream, mode)
    assert {str(prefix) for prefix in rib.desired()} == expected


@pytest.mark.parametrize("mode", ["whole", "chunks", "bytewise"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_bad_counted(mode, seed):
    stream, _expected, bad = _stream(seed)
    decoder, _rib, malformed = _run(stream, mode)
    assert malformed == bad
    assert decoder.stats.malformed == bad


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_unknown_ignored(seed):
    stream, _expected, _bad = _stream(seed)
    decoder, _rib, _malformed = _run(stream, "whole")
    ignored = sum(decoder.stats.ignored[kind] for kind in UNKNOWN_TYPES)
    assert ignored == UNKNOWN_COUNT


def test_stream_leaves_no_pending_bytes():
    stream, _expected, _bad = _stream(1)
    decoder, _rib, _malformed = _run(stream, "chunks")
    assert decoder.pending == 0
