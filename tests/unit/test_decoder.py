"""Decoder tests on lines recorded from ExaBGP 5.0.15 (tests/fixtures/exabgp)."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from bgpnet.bgp.decoder import EXCERPT_CHARS, Decoder
from bgpnet.model import (
    Ack,
    Announce,
    EndOfRib,
    Malformed,
    Notification,
    PeerId,
    PeerOpen,
    PeerState,
    Withdraw,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exabgp"
FILES = ("agent.jsonl", "extra.jsonl", "acks.txt")


def _lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines(keepends=True)


ALL_LINES = [(f"{name}:{number}", line)
             for name in FILES for number, line in enumerate(_lines(name), 1)]
AGENT = _lines("agent.jsonl")
EXTRA = _lines("extra.jsonl")


def _find(*needles: str, lines: list[bytes] = AGENT) -> bytes:
    """Return the first recorded line containing every needle."""
    for line in lines:
        if all(needle.encode() in line for needle in needles):
            return line
    raise AssertionError(f"no recorded line contains {needles}")


def _decode(line: bytes | str) -> list:
    return Decoder().decode_line(line)


def _mutate(line: bytes, change) -> bytes:
    """Return a recorded line with its JSON changed by ``change(message)``."""
    message = json.loads(line)
    change(message)
    return json.dumps(message).encode()


def _peer(text: str) -> PeerId:
    return PeerId(ip_address(text))


def _message(message: dict) -> dict:
    return message["neighbor"]["message"]


REFLECTED = _find('"originator-id": "192.168.77.12"', '"ipv4 unicast"', '"announce"')
EBGP4 = _find('"peer": "192.168.77.12"', '"as-path"', '"ipv4 unicast"')
EBGP6_LINK_LOCAL = _find('"fe80::')
WITHDRAW4 = _find('"withdraw"', '"10.244.2.0/24"')
WITHDRAW6 = _find('"withdraw"', '"ipv6 unicast"')


# --- every recorded line ---

@pytest.mark.parametrize("label,line", ALL_LINES, ids=[label for label, _ in ALL_LINES])
def test_fixture_no_malformed(label, line):
    events = _decode(line)
    assert not [e for e in events if isinstance(e, Malformed)]


@pytest.mark.parametrize("label,line", ALL_LINES, ids=[label for label, _ in ALL_LINES])
def test_fixture_byte_by_byte(label, line):
    decoder = Decoder()
    events = []
    for i in range(len(line)):
        events.extend(decoder.feed(line[i:i + 1]))
    assert events == _decode(line)


@pytest.mark.parametrize("label,line", ALL_LINES, ids=[label for label, _ in ALL_LINES])
def test_fixture_trailing_bytes(label, line):
    decoder = Decoder()
    trailing = b'{ "exabgp": "5.0.0", "ty'
    events = decoder.feed(line + trailing)
    assert events == _decode(line)
    assert decoder.pending == len(trailing)


def test_fixture_whole_files():
    for name in FILES:
        decoder = Decoder()
        events = decoder.feed((FIXTURES / name).read_bytes())
        expected = [e for line in _lines(name) for e in _decode(line)]
        assert events == expected, name
        assert decoder.pending == 0, name
        assert decoder.stats.malformed == 0, name


# --- recorded messages, decoded ---

def test_state_connected():
    line = _find('"peer": "192.168.77.1"', '"state": "connected"')
    assert _decode(line) == [PeerState(_peer("192.168.77.1"), "connected", "")]


def test_state_up_ipv6():
    line = _find('"peer": "fd77::1"', '"state": "up"')
    assert _decode(line) == [PeerState(_peer("fd77::1"), "up", "")]


def test_state_down_reason():
    line = _find('"state": "down"', "notification received")
    assert _decode(line) == [
        PeerState(_peer("192.168.77.12"), "down", "notification received (6,2)")]


def test_announce_reflected():
    (event,) = _decode(REFLECTED)
    assert event == Announce(
        peer=_peer("192.168.77.1"),
        nexthop=ip_address("192.168.77.12"),
        prefixes=(ip_network("10.244.2.0/24"), ip_network("10.244.12.0/24")),
        originator_id=ip_address("192.168.77.12"),
        as_path=(),
    )


def test_announce_own_route_reflected():
    (event,) = _decode(_find('"originator-id": "192.168.77.11"'))
    assert event.originator_id == ip_address("192.168.77.11")


def test_announce_ebgp_as_path():
    (event,) = _decode(EBGP4)
    assert event.as_path == (65001,)
    assert event.originator_id is None
    assert event.prefixes == (ip_network("10.244.3.0/24"),)


def test_announce_ipv6_reflected():
    line = _find('"originator-id": "192.168.77.12"', '"ipv6 unicast"')
    (event,) = _decode(line)
    assert event.peer == _peer("fd77::1")
    assert event.nexthop == ip_address("fd77::12")
    assert event.prefixes == (ip_network("fd00:244:2::/64"),)


def test_ipv6_link_local_duplicate_dropped():
    decoder = Decoder()
    events = decoder.decode_line(EBGP6_LINK_LOCAL)
    assert events == [Announce(peer=_peer("fd77::12"), nexthop=ip_address("fd77::12"),
                               prefixes=(ip_network("fd00:244:3::/64"),), as_path=(65001,))]
    assert decoder.stats.ignored["link-local-duplicate"] == 1


def test_ipv6_link_local_alone_kept():
    def only_link_local(message):
        family = _message(message)["update"]["announce"]["ipv6 unicast"]
        del family["fd77::12"]

    (event,) = _decode(_mutate(EBGP6_LINK_LOCAL, only_link_local))
    assert event.nexthop.is_link_local


def test_withdraw_ipv4():
    assert _decode(WITHDRAW4) == [Withdraw(_peer("192.168.77.1"), (
        ip_network("10.244.1.0/24"), ip_network("10.244.2.0/24"),
        ip_network("10.244.12.0/24")))]


def test_withdraw_ipv6():
    assert _decode(WITHDRAW6) == [
        Withdraw(_peer("fd77::1"), (ip_network("fd00:244:2::/64"),))]


@pytest.mark.parametrize("afi,peer", [("ipv4", "192.168.77.12"), ("ipv6", "fd77::12")])
def test_end_of_rib(afi, peer):
    line = _find('"eor"', f'"afi" : "{afi}"')
    assert _decode(line) == [EndOfRib(_peer(peer), afi, "unicast")]


def test_notification_received():
    line = _find('"type": "notification"', '"code": 6')
    assert _decode(line) == [Notification(_peer("192.168.77.12"), 6, 2, "")]


def test_notification_message_text():
    def with_text(message):
        message["neighbor"]["notification"]["message"] = "maintenance"

    (event,) = _decode(_mutate(_find('"code": 6'), with_text))
    assert event.data == "maintenance"


def test_acks():
    # The recording script sends six valid commands and one /33 prefix.
    events = [e for line in _lines("acks.txt") for e in _decode(line)]
    assert events.count(Ack(True, "done")) == 6
    assert events.count(Ack(False, "error")) == 1
    assert len(events) == 7


def test_ack_json_form():
    line = '{ "answer": "error", "message": "this command does not support json output" }'
    assert _decode(line) == [Ack(False, "error")]


def test_ack_crlf():
    assert _decode(b"done\r") == [Ack(True, "done")]


def test_ignored_types_counted():
    decoder = Decoder()
    events = decoder.feed((FIXTURES / "extra.jsonl").read_bytes())
    assert all(isinstance(event, PeerOpen) for event in events)
    assert decoder.stats.ignored["keepalive"] == 4
    assert decoder.stats.ignored["notification-shutdown"] == 1


def test_shutdown_notification_ignored():
    decoder = Decoder()
    assert decoder.decode_line(_find('"notification": "shutdown"')) == []
    assert decoder.stats.ignored["notification-shutdown"] == 1


def test_stats_counts():
    decoder = Decoder()
    decoder.feed(b"".join(AGENT) + b"not json\n")
    assert decoder.stats.lines == len(AGENT) + 1
    assert decoder.stats.malformed == 1
    assert decoder.stats.events == sum(len(_decode(line)) for line in AGENT) + 1


# --- shapes ExaBGP can print but the recording does not contain ---

def test_withdraw_before_announce():
    def add_withdraw(message):
        update = _message(message)["update"]
        update["withdraw"] = {"ipv4 unicast": [{"nlri": "10.244.9.0/24"}]}

    events = _decode(_mutate(REFLECTED, add_withdraw))
    assert [type(e) for e in events] == [Withdraw, Announce]


def test_two_nexthops_two_announces():
    def add_group(message):
        family = _message(message)["update"]["announce"]["ipv4 unicast"]
        family["192.168.77.13"] = [{"nlri": "10.244.13.0/24"}]

    events = _decode(_mutate(REFLECTED, add_group))
    assert [e.nexthop for e in events] == [ip_address("192.168.77.12"),
                                           ip_address("192.168.77.13")]


def test_compact_nlri_strings():
    def compact(message):
        family = _message(message)["update"]["announce"]["ipv4 unicast"]
        family["192.168.77.12"] = ["10.244.2.0/24"]

    (event,) = _decode(_mutate(REFLECTED, compact))
    assert event.prefixes == (ip_network("10.244.2.0/24"),)


def test_as_set_counts_once():
    def as_set(message):
        _message(message)["update"]["attribute"]["as-path"] = {
            "0": {"element": "as-sequence", "value": [65001, 65002]},
            "1": {"element": "as-set", "value": [65010, 65005]},
        }

    (event,) = _decode(_mutate(EBGP4, as_set))
    assert event.as_path == (65001, 65002, 65005)


def test_other_family_ignored():
    def flow(message):
        update = _message(message)["update"]
        update["announce"] = {"ipv4 flow": {"no-nexthop": [{"destination-ipv4": "x"}]}}

    decoder = Decoder()
    assert decoder.decode_line(_mutate(REFLECTED, flow)) == []
    assert decoder.stats.ignored["announce-ipv4 flow"] == 1


def test_sent_update_ignored():
    def sent(message):
        message["neighbor"]["direction"] = "send"

    decoder = Decoder()
    assert decoder.decode_line(_mutate(REFLECTED, sent)) == []
    assert decoder.stats.ignored["update-send"] == 1


def test_empty_line_ignored():
    decoder = Decoder()
    assert decoder.feed(b"\n\n") == []
    assert decoder.stats.ignored["empty-line"] == 2


# --- malformed input ---

def _set(path: tuple, value):
    def change(message):
        target = message
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


_UPDATE = ("neighbor", "message", "update")
_NEXTHOPS = (*_UPDATE, "announce", "ipv4 unicast")

MALFORMED = [
    ("truncated", REFLECTED[: len(REFLECTED) // 2]),
    ("not json", b"this is not json"),
    ("not utf-8", b'{"type": "\xff\xfe"}'),
    ("json list", b"[1, 2, 3]"),
    ("json string", b'"done"'),
    ("type missing", b'{"exabgp": "5.0.0"}'),
    ("type number", b'{"type": 7}'),
    ("nested too deep", b"[" * 100_000 + b"]" * 100_000),
    ("neighbor list", _mutate(REFLECTED, _set(("neighbor",), []))),
    ("peer missing", _mutate(REFLECTED, _set(("neighbor", "address"), {}))),
    ("peer not address", _mutate(REFLECTED, _set(("neighbor", "address", "peer"), "peer1"))),
    ("state number", _mutate(_find('"state": "up"'), _set(("neighbor", "state"), 1))),
    ("update not object", _mutate(REFLECTED, _set(_UPDATE, "x"))),
    ("announce list", _mutate(REFLECTED, _set((*_UPDATE, "announce"), []))),
    ("nexthop null", _mutate(REFLECTED, _set(_NEXTHOPS, {"null": [{"nlri": "10.244.2.0/24"}]}))),
    ("nlri number", _mutate(REFLECTED, _set(_NEXTHOPS, {"192.168.77.12": [{"nlri": 10}]}))),
    ("nlri list not", _mutate(REFLECTED, _set(_NEXTHOPS, {"192.168.77.12": {"nlri": "x"}}))),
    ("prefix /33", _mutate(REFLECTED, _set(_NEXTHOPS, {"192.168.77.12": ["10.244.2.0/33"]}))),
    ("prefix host bits", _mutate(REFLECTED, _set(_NEXTHOPS, {"192.168.77.12": ["10.244.2.1/24"]}))),
    ("prefix wrong family", _mutate(REFLECTED, _set(_NEXTHOPS, {"192.168.77.12": ["fd00::/64"]}))),
    ("originator bad", _mutate(REFLECTED, _set((*_UPDATE, "attribute", "originator-id"), 5))),
    ("as-path list", _mutate(EBGP4, _set((*_UPDATE, "attribute", "as-path"), [65001]))),
    ("as-path asn text", _mutate(EBGP4, _set((*_UPDATE, "attribute", "as-path", "0", "value"),
                                             ["65001"]))),
    ("as-path asn bool", _mutate(EBGP4, _set((*_UPDATE, "attribute", "as-path", "0", "value"),
                                             [True]))),
    ("as-path position", _mutate(EBGP4, _set((*_UPDATE, "attribute", "as-path"),
                                             {"x": {"element": "as-set", "value": []}}))),
    ("withdraw object", _mutate(WITHDRAW4, _set((*_UPDATE, "withdraw", "ipv4 unicast"), {}))),
    ("eor afi number", _mutate(_find('"eor"'), _set(("neighbor", "message", "eor", "afi"), 4))),
    ("code text", _mutate(_find('"code": 6'), _set(("neighbor", "notification", "code"), "6"))),
    ("huge integer", b'{"type": "state", "x": ' + b"9" * 5000 + b"}"),
]


@pytest.mark.parametrize("label,line", MALFORMED, ids=[label for label, _ in MALFORMED])
def test_malformed_line(label, line):
    decoder = Decoder()
    events = decoder.feed(line + b"\n")
    assert len(events) == 1
    assert isinstance(events[0], Malformed)
    assert len(events[0].excerpt) <= EXCERPT_CHARS
    assert decoder.stats.malformed == 1


@pytest.mark.parametrize("label,line", MALFORMED, ids=[label for label, _ in MALFORMED])
def test_malformed_then_good(label, line):
    decoder = Decoder()
    decoder.feed(line + b"\n")
    assert decoder.feed(REFLECTED) == _decode(REFLECTED)


def test_malformed_reason_names_field():
    (event,) = _decode(dict(MALFORMED)["prefix /33"])
    assert "10.244.2.0/33" in event.reason


def test_malformed_line_dropped_whole():
    def one_bad(message):
        family = _message(message)["update"]["announce"]["ipv4 unicast"]
        family["192.168.77.12"].append({"nlri": "300.0.0.0/8"})

    events = _decode(_mutate(REFLECTED, one_bad))
    assert [type(e) for e in events] == [Malformed]


def test_huge_line_reported_once():
    decoder = Decoder(max_line_bytes=1000)
    events = []
    for _ in range(50):
        events.extend(decoder.feed(b"x" * 100))
    events.extend(decoder.feed(b"xxx\n" + REFLECTED))
    assert [type(e) for e in events] == [Malformed, Announce]
    assert decoder.pending == 0


def test_huge_line_default_limit():
    decoder = Decoder()
    chunk = b'{"type": "update", "x": "' + b"a" * (1 << 20)
    events = []
    for _ in range(5):
        events.extend(decoder.feed(chunk))
    events.extend(decoder.feed(b'"}\n' + REFLECTED))
    assert [type(e) for e in events] == [Malformed, Announce]


def test_huge_line_in_one_chunk():
    decoder = Decoder(max_line_bytes=1000)
    events = decoder.feed(b"y" * 5000 + b"\n" + REFLECTED)
    assert [type(e) for e in events] == [Malformed, Announce]


def test_decode_line_too_long():
    decoder = Decoder(max_line_bytes=10)
    (event,) = decoder.decode_line("x" * 11)
    assert isinstance(event, Malformed)



def test_open_graceful_restart_helper_only():
    decoder = Decoder()
    events = decoder.decode_line(_find('"type": "open"', '"peer": "192.168.77.12"', lines=EXTRA).decode())
    assert events == [PeerOpen(PeerId(ip_address("192.168.77.12")), 120, ())]


def test_open_graceful_restart_families():
    line = _find('"type": "open"', '"peer": "192.168.77.12"', lines=EXTRA).decode()
    line = line.replace('"address-family-flags": { }', '"address-family-flags": { "ipv4/unicast": [ "forwarding" ] }')
    [event] = Decoder().decode_line(line)
    assert event.restart_families == ("ipv4 unicast",)


def test_open_without_graceful_restart():
    line = _find('"type": "open"', '"peer": "192.168.77.12"', lines=EXTRA).decode()
    start = line.index('"64":')
    end = line.index('"65":')
    [event] = Decoder().decode_line(line[:start] + line[end:])
    assert event.restart_time is None


PREFIX_CASES = ["0.0.0.0/0", "10.0.0.0/8", "10.244.1.0/24", "192.168.0.2/31", "10.0.0.1/32",
                "fd00::/64", "2001:db8::1/128"]


@pytest.mark.parametrize("text", PREFIX_CASES)
def test_fast_prefix_equals_constructor(text):
    from bgpnet.bgp.decoder import _parse_prefix

    fast = _parse_prefix(text)
    slow = ip_network(text)
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert str(fast) == text
    assert fast.netmask == slow.netmask
    assert fast.broadcast_address == slow.broadcast_address
    assert fast.subnet_of(ip_network("0.0.0.0/0" if fast.version == 4 else "::/0"))


@pytest.mark.parametrize("text", ["10.244.1.1/24", "10.244.1.0/33", "10.244.1/24", "300.0.0.0/8"])
def test_fast_prefix_rejects_invalid(text):
    from bgpnet.bgp.decoder import _parse_prefix

    with pytest.raises(ValueError):
        _parse_prefix(text)
