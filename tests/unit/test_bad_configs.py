"""Malformed agent configs: each is rejected with a message that names the bad field.

``CASES`` changes one thing in a valid config per case. ``render`` turns a case into
YAML text with a given ``state_dir``, so the integration test
``tests/integration/test_bad_config_host.py`` can run the same cases through
``bgpnet agent`` in a namespace and check that the host stays unchanged.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgpnet import cli, config
from bgpnet.errors import ConfigError

BASE: dict[str, Any] = {
    "node": {"name": "node01", "address": "192.168.1.11", "asn": 64512},
    "pod_cidr": "10.244.1.0/24",
    "cluster_cidr": "10.244.0.0/16",
    "bridge": {"name": "v-net-0", "mtu": 1500},
    "peers": [{"name": "tor", "address": "192.168.1.1", "asn": 64512}],
    "http": {"listen": None},
}


def _set(path: str, value: Any) -> Callable[[dict], Any]:
    """Return a change that sets the dotted ``path`` (``peers.0.asn``) to ``value``."""
    def change(doc: dict) -> dict:
        *parents, last = path.split(".")
        target: Any = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return doc
    return change


def _drop(path: str) -> Callable[[dict], Any]:
    def change(doc: dict) -> dict:
        *parents, last = path.split(".")
        target: Any = doc
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        del target[last]
        return doc
    return change


def _duplicate_peer(doc: dict) -> dict:
    doc["peers"].append(dict(doc["peers"][0]))
    return doc


# (label, change to BASE or whole YAML text, field the error must name)
CASES: list[tuple[str, Callable[[dict], Any] | str, str]] = [
    ("node-missing", _drop("node"), "node"),
    ("node-not-mapping", _set("node", "node01"), "node"),
    ("node-name-missing", _drop("node.name"), "node.name"),
    ("node-name-upper", _set("node.name", "Node_01"), "node.name"),
    ("node-name-number", _set("node.name", 123), "node.name"),
    ("node-address-garbage", _set("node.address", "not-an-ip"), "node.address"),
    ("node-address-unspecified", _set("node.address", "0.0.0.0"), "node.address"),
    ("node-address-loopback", _set("node.address", "127.0.0.1"), "node.address"),
    ("node-address-multicast", _set("node.address", "224.0.0.1"), "node.address"),
    ("node-address-cidr", _set("node.address", "192.168.1.11/24"), "node.address"),
    ("node-asn-zero", _set("node.asn", 0), "node.asn"),
    ("node-asn-reserved", _set("node.asn", 4294967295), "node.asn"),
    ("node-asn-string", _set("node.asn", "64512"), "node.asn"),
    ("node-asn-bool", _set("node.asn", True), "node.asn"),
    ("router-id-ipv6", _set("node.router_id", "fd00::1"), "node.router_id"),
    ("router-id-garbage", _set("node.router_id", "x"), "node.router_id"),
    ("router-id-missing-ipv6", _set("node.address", "fd00::11"), "node.router_id"),
    ("node-unknown-key", _set("node.zone", "a"), "node.zone"),
    ("pod-cidr-missing", _drop("pod_cidr"), "pod_cidr"),
    ("pod-cidr-host-bits", _set("pod_cidr", "10.244.1.5/24"), "pod_cidr"),
    ("pod-cidr-outside", _set("pod_cidr", "10.245.1.0/24"), "pod_cidr"),
    ("pod-cidr-whole-cluster", _set("pod_cidr", "10.244.0.0/16"), "pod_cidr"),
    ("pod-cidr-too-small", _set("pod_cidr", "10.244.1.0/31"), "pod_cidr"),
    ("pod-cidr-family", _set("pod_cidr", "fd00::/64"), "pod_cidr"),
    ("pod-cidr-no-length", _set("pod_cidr", "10.244.1.0"), "pod_cidr"),
    ("cluster-cidr-missing", _drop("cluster_cidr"), "cluster_cidr"),
    ("cluster-cidr-default", _set("cluster_cidr", "0.0.0.0/0"), "cluster_cidr"),
    ("cluster-cidr-garbage", _set("cluster_cidr", "banana/16"), "cluster_cidr"),
    ("cluster-cidr-number", _set("cluster_cidr", 10), "cluster_cidr"),
    ("bridge-name-long", _set("bridge.name", "this-name-is-too-long"), "bridge.name"),
    ("bridge-name-space", _set("bridge.name", "bad name"), "bridge.name"),
    ("bridge-mtu-low", _set("bridge.mtu", 67), "bridge.mtu"),
    ("bridge-mtu-high", _set("bridge.mtu", 70000), "bridge.mtu"),
    ("bridge-mtu-string", _set("bridge.mtu", "1500"), "bridge.mtu"),
    ("bridge-unknown-key", _set("bridge.colour", "blue"), "bridge.colour"),
    ("peers-not-list", _set("peers", {"address": "192.168.1.1"}), "peers"),
    ("peer-address-missing", _drop("peers.0.address"), "peers[0].address"),
    ("peer-address-self", _set("peers.0.address", "192.168.1.11"), "peers[0].address"),
    ("peer-address-twice", _duplicate_peer, "peers[1].address"),
    ("peer-asn-missing", _drop("peers.0.asn"), "peers[0].asn"),
    ("peer-asn-negative", _set("peers.0.asn", -1), "peers[0].asn"),
    ("peer-port-zero", _set("peers.0.port", 0), "peers[0].port"),
    ("peer-port-high", _set("peers.0.port", 70000), "peers[0].port"),
    ("peer-hold-two", _set("peers.0.hold_time", 2), "peers[0].hold_time"),
    ("peer-hold-high", _set("peers.0.hold_time", 70000), "peers[0].hold_time"),
    ("peer-passive-string", _set("peers.0.passive", "yes"), "peers[0].passive"),
    ("peer-md5-quote", _set("peers.0.md5_password", 'a"b'), "peers[0].md5_password"),
    ("peer-md5-long", _set("peers.0.md5_password", "x" * 81), "peers[0].md5_password"),
    ("peer-name-quote", _set("peers.0.name", 'a"b'), "peers[0].name"),
    ("peer-unknown-key", _set("peers.0.ttl", 1), "peers[0].ttl"),
    ("protocol-reserved", _set("route_protocol", 186), "route_protocol"),
    ("protocol-high", _set("route_protocol", 256), "route_protocol"),
    ("protocol-string", _set("route_protocol", "201"), "route_protocol"),
    ("state-dir-relative", _set("state_dir", "relative/path"), "state_dir"),
    ("http-listen-name", _set("http.listen", "localhost:9180"), "http.listen"),
    ("http-listen-port", _set("http.listen", "127.0.0.1:99999"), "http.listen"),
    ("resync-zero", _set("resync_seconds", 0), "resync_seconds"),
    ("resync-string", _set("resync_seconds", "30"), "resync_seconds"),
    ("restart-enabled-string", _set("graceful_restart", {"enabled": "yes"}),
     "graceful_restart.enabled"),
    ("restart-time-zero", _set("graceful_restart", {"restart_time": 0}),
     "graceful_restart.restart_time"),
    ("restart-time-high", _set("graceful_restart", {"restart_time": 4096}),
     "graceful_restart.restart_time"),
    ("exabgp-command-empty", _set("exabgp", {"command": ""}), "exabgp.command"),
    ("top-unknown-key", _set("pod_cdir", "10.244.1.0/24"), "pod_cdir"),
    ("document-list", "- node01\n- node02\n", "config"),
    ("document-string", "just a string\n", "config"),
    ("yaml-syntax", "node: [\n", "config"),
]

LABELS = [label for label, _change, _field in CASES]


def render(change: Callable[[dict], Any] | str, state_dir: Path) -> str:
    """Return the YAML text of one case, with ``state_dir`` set where the case allows."""
    if isinstance(change, str):
        return change
    doc = copy.deepcopy(BASE)
    doc["state_dir"] = str(state_dir)
    return yaml.safe_dump(change(doc), sort_keys=False)


def test_cases_count():
    assert len(CASES) >= 50


def test_base_is_valid(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(render(lambda doc: doc, tmp_path / "state"))
    assert config.load_file(path).node.name == "node01"


@pytest.mark.parametrize("label,change,field", CASES, ids=LABELS)
def test_rejected_names_field(tmp_path, label, change, field):
    path = tmp_path / "agent.yaml"
    path.write_text(render(change, tmp_path / "state"))
    with pytest.raises(ConfigError) as caught:
        config.load_file(path)
    assert caught.value.field == field
    assert re.match(rf"{re.escape(field)}[: ]", str(caught.value))


@pytest.mark.parametrize("label,change,field", CASES, ids=LABELS)
def test_check_exits_2(tmp_path, capsys, label, change, field):
    path = tmp_path / "agent.yaml"
    path.write_text(render(change, tmp_path / "state"))
    status = cli.main(["agent", "--config", str(path), "--check"])
    assert status == 2
    assert re.search(rf"invalid config: {re.escape(field)}[: ]", capsys.readouterr().err)
    assert not (tmp_path / "state").exists()
