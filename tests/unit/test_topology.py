"""Unit tests of the lab's pure parts: topology parsing, the plan, and the check report."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from bgpnet.errors import ConfigError
from bgpnet.lab import report
from bgpnet.lab.plan import make_plan, namespace_name
from bgpnet.lab.topology import Role, load_file, parse

REPO = Path(__file__).resolve().parents[2]
TOR = REPO / "containerlab" / "bgpnet-tor.clab.yml"
MESH = REPO / "containerlab" / "bgpnet-mesh.clab.yml"


def _tor_data() -> dict:
    return yaml.safe_load(TOR.read_text())


# -- topology ------------------------------------------------------------------


def test_tor_roles():
    topology = load_file(TOR)
    roles = {node.name: node.role for node in topology.nodes}
    assert roles == {"br-bgpnet": Role.BRIDGE, "tor": Role.FRR, "node01": Role.AGENT,
                     "node02": Role.AGENT, "node03": Role.AGENT}


def test_tor_name():
    assert load_file(TOR).name == "bgpnet"


def test_tor_pods():
    topology = load_file(TOR)
    assert [node.pods for node in topology.with_role(Role.AGENT)] == [2, 2, 2]


def test_tor_agent_bind_resolved():
    node = load_file(TOR).node("node02")
    assert node.bind_source("/etc/bgpnet/agent.yaml") == REPO / "configs" / "node02.yaml"


def test_tor_exec_split():
    node = load_file(TOR).node("node01")
    assert node.exec_lines == (("ip", "addr", "add", "192.168.1.11/24", "dev", "eth1"),)


def test_mesh_has_no_router():
    topology = load_file(MESH)
    assert topology.with_role(Role.FRR) == ()


def test_mesh_agents():
    topology = load_file(MESH)
    assert len(topology.with_role(Role.AGENT)) == 3


def test_host_role_without_binds():
    data = _tor_data()
    data["topology"]["nodes"]["client"] = {"kind": "linux", "image": "alpine"}
    assert parse(data, TOR).node("client").role is Role.HOST


def test_unknown_keys_ignored():
    data = _tor_data()
    data["topology"]["nodes"]["tor"]["startup-delay"] = 5
    data["mgmt"] = {"network": "none"}
    assert parse(data, TOR).node("tor").role is Role.FRR


def _set(path: str, value):
    """Return a change that sets a dotted path (list indexes as numbers) in the document."""
    def change(data: dict) -> None:
        keys = path.split(".")
        target = data
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return change


BAD = [
    ("lab name upper case", _set("name", "BGPnet"), "name"),
    ("lab name missing", _set("name", None), "name"),
    ("unknown kind", _set("topology.nodes.tor.kind", "srl"), "topology.nodes.tor.kind"),
    ("bind without target", _set("topology.nodes.tor.binds", ["frr.conf"]),
     "topology.nodes.tor.binds[0]"),
    ("bind bad mode", _set("topology.nodes.tor.binds", ["a:/b:rx"]),
     "topology.nodes.tor.binds[0]"),
    ("agent config missing", _set("topology.nodes.node01.binds",
                                  ["nowhere.yaml:/etc/bgpnet/agent.yaml"]),
     "topology.nodes.node01.binds"),
    ("exec not a list", _set("topology.nodes.node01.exec", "ip link"),
     "topology.nodes.node01.exec"),
    ("exec unbalanced quote", _set("topology.nodes.node01.exec", ["echo 'x"]),
     "topology.nodes.node01.exec[0]"),
    ("pods not a number", _set("topology.nodes.node01.labels", {"bgpnet.pods": "two"}),
     "topology.nodes.node01.labels.bgpnet.pods"),
    ("pods too many", _set("topology.nodes.node01.labels", {"bgpnet.pods": "99"}),
     "topology.nodes.node01.labels.bgpnet.pods"),
    ("pods on router", _set("topology.nodes.tor.labels", {"bgpnet.pods": "1"}),
     "topology.nodes.tor.labels.bgpnet.pods"),
    ("endpoint unknown node", _set("topology.links.0.endpoints", ["core:eth1", "br-bgpnet:p1"]),
     "topology.links[0].endpoints[0]"),
    ("endpoint without interface", _set("topology.links.0.endpoints", ["tor", "br-bgpnet:p1"]),
     "topology.links[0].endpoints[0]"),
    ("interface name too long", _set("topology.links.0.endpoints",
                                     ["tor:eth1", "br-bgpnet:a-very-long-port"]),
     "topology.links[0].endpoints[1]"),
    ("endpoint used twice", _set("topology.links.1.endpoints", ["tor:eth1", "br-bgpnet:p9"]),
     "topology.links[1].endpoints[0]"),
    ("self link", _set("topology.links.0.endpoints", ["tor:eth1", "tor:eth2"]),
     "topology.links[0].endpoints"),
    ("one endpoint", _set("topology.links.0.endpoints", ["tor:eth1"]),
     "topology.links[0].endpoints"),
]


@pytest.mark.parametrize("label, change, key", BAD, ids=[case[0] for case in BAD])
def test_invalid_names_key(label, change, key):
    data = copy.deepcopy(_tor_data())
    change(data)
    with pytest.raises(ConfigError) as caught:
        parse(data, TOR)
    assert caught.value.field == f"{TOR}: {key}"


def test_invalid_names_file():
    data = _tor_data()
    data["name"] = "Bad Name"
    with pytest.raises(ConfigError) as caught:
        parse(data, TOR)
    assert str(TOR) in str(caught.value)


def test_invalid_names_value():
    data = _tor_data()
    data["topology"]["nodes"]["tor"]["kind"] = "ceos"
    with pytest.raises(ConfigError) as caught:
        parse(data, TOR)
    assert "'ceos'" in str(caught.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_file(tmp_path / "missing.clab.yml")
    assert "cannot be read" in str(caught.value)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.clab.yml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert "not valid YAML" in str(caught.value)


# -- plan ----------------------------------------------------------------------


def test_plan_node_namespaces():
    plan = make_plan(load_file(TOR))
    assert plan.node_namespaces == ("bgpnet-br-bgpnet", "bgpnet-tor", "bgpnet-node01",
                                    "bgpnet-node02", "bgpnet-node03")


def test_plan_pod_namespaces():
    plan = make_plan(load_file(TOR))
    assert [pod.namespace for pod in plan.pods] == [
        "bgpnet-node01-pod1", "bgpnet-node01-pod2", "bgpnet-node02-pod1",
        "bgpnet-node02-pod2", "bgpnet-node03-pod1", "bgpnet-node03-pod2"]


def test_plan_namespaces_nodes_first():
    plan = make_plan(load_file(TOR))
    assert plan.namespaces == plan.node_namespaces + tuple(pod.namespace for pod in plan.pods)


def test_plan_bridge_side_is_b():
    data = _tor_data()
    data["topology"]["links"][0]["endpoints"] = ["br-bgpnet:tor-eth1", "tor:eth1"]
    veth = make_plan(parse(data, TOR)).veths[0]
    assert (veth.a_namespace, veth.a_interface, veth.b_namespace, veth.b_interface,
            veth.b_bridge) == ("bgpnet-tor", "eth1", "bgpnet-br-bgpnet", "tor-eth1", "br-bgpnet")


def test_plan_node_to_node_link():
    data = _tor_data()
    data["topology"]["links"].append({"endpoints": ["node01:eth2", "node02:eth2"]})
    veth = make_plan(parse(data, TOR)).veths[-1]
    assert veth.b_bridge is None


def test_plan_runtime_dirs(tmp_path):
    plan = make_plan(load_file(TOR), runtime_root=tmp_path)
    assert plan.node("tor").runtime_dir == tmp_path / "bgpnet" / "tor"


def test_plan_manifest_path(tmp_path):
    plan = make_plan(load_file(TOR), runtime_root=tmp_path)
    assert plan.manifest_path == tmp_path / "bgpnet" / "manifest.json"


def test_plan_frr_config():
    plan = make_plan(load_file(TOR))
    assert plan.node("tor").frr_config == REPO / "containerlab" / "tor" / "frr.conf"


def test_namespace_name_pod():
    assert namespace_name("bgpnet", "node01", "pod1") == "bgpnet-node01-pod1"


# -- report --------------------------------------------------------------------


def _net(text: str):
    return ipaddress.ip_network(text)


CIDRS = {"node01": _net("10.244.1.0/24"), "node02": _net("10.244.2.0/24"),
         "node03": _net("10.244.3.0/24")}


def test_expected_routes_excludes_own():
    expected = report.expected_routes(CIDRS)
    assert expected["node01"] == frozenset({_net("10.244.2.0/24"), _net("10.244.3.0/24")})


def test_missing_routes_none():
    learned = {node: set(CIDRS.values()) - {cidr} for node, cidr in CIDRS.items()}
    assert report.missing_routes(report.expected_routes(CIDRS), learned) == {}


def test_missing_routes_gap():
    learned = {"node01": {_net("10.244.2.0/24")},
               "node02": {_net("10.244.1.0/24"), _net("10.244.3.0/24")}}
    missing = report.missing_routes(report.expected_routes(CIDRS), learned)
    assert missing == {"node01": (_net("10.244.3.0/24"),),
                       "node03": (_net("10.244.1.0/24"), _net("10.244.2.0/24"))}


ROUTES = [
    {"dst": "default", "gateway": "192.168.1.1", "dev": "eth1"},
    {"dst": "10.244.1.0/24", "dev": "v-net-0", "protocol": "kernel", "scope": "link"},
    {"dst": "10.244.3.0/24", "gateway": "192.168.1.13", "dev": "eth1", "protocol": "bgpnet"},
    {"dst": "10.244.2.0/24", "protocol": "201",
     "nexthops": [{"gateway": "192.168.1.12", "dev": "eth1"},
                  {"gateway": "192.168.1.22", "dev": "eth2"}]},
    {"dst": "192.168.1.0/24", "dev": "eth1", "protocol": "kernel"},
]


def test_route_prefixes_skip_default():
    assert _net("0.0.0.0/0") not in report.route_prefixes(ROUTES)


def test_pod_route_rows():
    rows = report.pod_route_rows(ROUTES, CIDRS.values())
    assert rows == [
        report.RouteRow("10.244.1.0/24", "dev v-net-0", "kernel"),
        report.RouteRow("10.244.2.0/24",
                        "via 192.168.1.12 dev eth1, via 192.168.1.22 dev eth2", "201"),
        report.RouteRow("10.244.3.0/24", "via 192.168.1.13 dev eth1", "bgpnet"),
    ]


def test_render_routes_empty():
    assert "(no route to any pod CIDR)" in report.render_routes({"node01": []})


PODS = [report.PodAddress("node01-pod1", "10.244.1.2"),
        report.PodAddress("node02-pod1", "10.244.2.2"),
        report.PodAddress("node03-pod1", None)]


def test_ping_pairs_ordered():
    assert len(report.ping_pairs(PODS)) == 6


def test_matrix_last_line():
    reached = {("node01-pod1", "node02-pod1"): True, ("node02-pod1", "node01-pod1"): True,
               ("node01-pod1", "node03-pod1"): False}
    text = report.render_matrix(PODS, reached)
    assert text.splitlines()[-1] == "reachable: 2/6 pod pairs"


def test_matrix_marks_failure():
    text = report.render_matrix(PODS, {("node01-pod1", "node02-pod1"): True})
    row = next(line for line in text.splitlines() if line.strip().startswith("node02-pod1"))
    assert row.split()[-3:] == ["FAIL", ".", "FAIL"]


def test_matrix_no_pods():
    assert report.render_matrix([], {}).splitlines()[-1] == "reachable: 0/0 pod pairs"
