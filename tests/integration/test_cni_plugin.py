"""Integration tests of ``bgpnet-cni``, driven as a runtime drives it, on namespaces the test creates.

Each call runs the plugin executable in the node's namespace (``ip netns exec``)
with the ``CNI_*`` environment and the plugin entry of ``deploy/cni/10-bgpnet.conflist``
on stdin, with the list's name and cniVersion added. Two node set-ups are tested:
``agent`` (``python -m bgpnet.api.control`` serves the control socket in the node
namespace, the fast path) and ``direct`` (the node is set up, nothing listens, the
config names ``stateDir``). Each runs with two executables: the Python entry point
``.venv/bin/bgpnet-cni`` and the C client of ``deploy/cni/shim``, compiled for the
test, which hands requests to the agent and execs the Python entry point when none
listens. Results are observed with ``ip -j`` and the lease
directory, not with bgpnet code. The reference ``bridge`` + ``host-local`` plugins run
the same scenarios where they apply, and their results are compared by shape.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(sys.executable).parent / "bgpnet-cni"
REFERENCE = Path("/usr/lib/cni/bridge")
C_SOURCE = REPO / "deploy" / "cni" / "shim" / "bgpnet-cni.c"
CONFLIST = REPO / "deploy" / "cni" / "10-bgpnet.conflist"
READY_TIMEOUT = 30.0
SUBNET = "10.77.0.0/24"
GATEWAY = "10.77.0.1"

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("needs root and iproute2", allow_module_level=True)


def run(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, check=check, capture_output=True, text=True).stdout


def ip_json(namespace: str, *args: str) -> list[dict]:
    output = run("ip", "-n", namespace, "-j", *args).strip()
    return json.loads(output) if output else []


def link_names(namespace: str) -> set[str]:
    return {link["ifname"] for link in ip_json(namespace, "link", "show")}


def inet_addresses(namespace: str, ifname: str) -> list[str]:
    found = []
    for link in ip_json(namespace, "addr", "show", "dev", ifname):
        for info in link.get("addr_info", []):
            if info["family"] == "inet":
                found.append(f"{info['local']}/{info['prefixlen']}")
    return found


def plugin_config(version: str = "1.1.0", **extra) -> dict:
    """Return the shipped conflist's plugin entry with the list's name and cniVersion."""
    conflist = json.loads(CONFLIST.read_text())
    return {**conflist["plugins"][0], "name": conflist["name"], "cniVersion": version, **extra}


class Node:
    """A node namespace with a bgpnet bridge, and the way to call a plugin inside it."""

    def __init__(self, namespace: str, lease_dir: Path, executable: Path, base: dict) -> None:
        self.namespace = namespace
        self.lease_dir = lease_dir
        self.executable = executable
        self.base = base

    def call(self, command: str, container_id: str = "", netns: str = "", ifname: str = "eth0",
             version: str | None = None, stdin: str | None = None, env: dict | None = None,
             **config) -> tuple[int, dict | None]:
        variables = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
                     "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni",
                     "PATH": os.environ["PATH"], **(env or {})}
        if stdin is None:
            conf = {**self.base, **config}
            if version is not None:
                conf["cniVersion"] = version
            stdin = json.dumps(conf)
        done = subprocess.run(["ip", "netns", "exec", self.namespace, str(self.executable)],
                              input=stdin, env=variables, capture_output=True, text=True,
                              timeout=120)
        output = json.loads(done.stdout) if done.stdout.strip() else None
        return done.returncode, output

    def lease_files(self) -> list[str]:
        """Return the leased addresses: the files named by an IP address."""
        if not self.lease_dir.is_dir():
            return []
        return sorted(name for name in os.listdir(self.lease_dir) if _is_address(name))


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _agent_config(path: Path) -> Path:
    path.write_text(
        "node: {name: testnode, address: 192.0.2.10, asn: 64512}\n"
        f"pod_cidr: {SUBNET}\n"
        "cluster_cidr: 10.77.0.0/16\n"
        "bridge: {name: v-net-0, mtu: 1400}\n"
        "peers: []\n")
    return path


def _control_ready(namespace: str) -> bool:
    probe = ("import sys; from bgpnet.cni import agent_client; "
             "sys.exit(agent_client.call({'op': 'node-state'}) is None)")
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
                          capture_output=True, cwd=REPO).returncode == 0


def _start_control(namespace: str, config: Path, state_dir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, sys.executable, "-m", "bgpnet.api.control",
         "--config", str(config), "--state-dir", str(state_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "control socket process exited"
        if _control_ready(namespace):
            return process
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"control socket in {namespace} did not answer")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def compile_client(directory: Path, python_plugin: Path) -> Path:
    """Compile the C client with ``python_plugin`` as its fallback; return its path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler for the C client")
    output = directory / "bgpnet-cni"
    subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror",
                    f'-DBGPNET_CNI_PYTHON="{python_plugin}"', "-o", str(output), str(C_SOURCE)],
                   check=True, capture_output=True)
    return output


@pytest.fixture(scope="session")
def c_client(tmp_path_factory) -> Path:
    return compile_client(tmp_path_factory.mktemp("c-client"), PLUGIN)


@pytest.fixture(params=["agent", "direct", "c-agent", "c-direct"])
def node(request, netns, tmp_path) -> Node:
    executable = PLUGIN
    if request.param.startswith("c-"):
        executable = request.getfixturevalue("c_client")
    namespace = netns("bgpt-node")
    state_dir = tmp_path / "state"
    config = _agent_config(tmp_path / "agent.yaml")
    process = _start_control(namespace, config, state_dir)
    if request.param.endswith("direct"):
        _stop(process)  # the node stays set up; nothing listens any more
        assert not _control_ready(namespace)
        base = plugin_config(stateDir=str(state_dir))
    else:
        request.addfinalizer(lambda: _stop(process))
        base = plugin_config()
    return Node(namespace, state_dir / "leases" / "bgpnet", executable, base)


@pytest.fixture
def reference(netns, tmp_path) -> Node:
    if not REFERENCE.exists():
        pytest.skip("reference plugins not installed (containernetworking-plugins)")
    namespace = netns("bgpt-ref")
    base = {"cniVersion": "1.0.0", "name": "reference", "type": "bridge", "bridge": "v-net-0",
            "isGateway": True, "isDefaultGateway": True, "hairpinMode": True, "mtu": 1400,
            "ipam": {"type": "host-local", "subnet": SUBNET,
                     "dataDir": str(tmp_path / "host-local")}}
    return Node(namespace, tmp_path / "host-local" / "reference", REFERENCE, base)


def shape(value):
    """Return the structure of a JSON value: keys and types, with list items merged."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


# ADD, CHECK and DEL for every supported version.


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_add_check_del(node, netns, version):
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"

    status, added = node.call("ADD", "c1", sandbox, version=version)
    assert status == 0, added
    assert added["cniVersion"] == version
    address = added["ips"][0]["address"]
    assert inet_addresses(pod, "eth0") == [address]
    assert {route.get("gateway") for route in ip_json(pod, "route", "show", "default")} == {GATEWAY}
    assert ip_json(pod, "link", "show", "eth0")[0]["mtu"] == 1400
    host = added["interfaces"][1]["name"]
    assert ip_json(node.namespace, "link", "show", host)[0]["master"] == "v-net-0"
    port = ip_json(node.namespace, "-d", "link", "show", host)[0]["linkinfo"]["info_slave_data"]
    assert port["hairpin"] is True
    assert node.lease_files() == [address.split("/")[0]]

    status, output = node.call("CHECK", "c1", sandbox, version=version, prevResult=added)
    assert (status, output) == (0, None)

    status, output = node.call("DEL", "c1", sandbox, version=version)
    assert (status, output) == (0, None)
    assert "eth0" not in link_names(pod)
    assert host not in link_names(node.namespace)
    assert node.lease_files() == []


def test_result_versions_differ(node, netns):
    pod = netns("bgpt-pod")
    _, old = node.call("ADD", "c1", f"/run/netns/{pod}", version="0.4.0")
    _, new = node.call("ADD", "c2", f"/run/netns/{pod}", ifname="eth1", version="1.1.0")
    assert old["ips"][0]["version"] == "4"
    assert "version" not in new["ips"][0]


def test_del_is_idempotent(node, netns):
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"
    node.call("ADD", "c1", sandbox)
    cases = [
        ("first", dict(container_id="c1", netns=sandbox)),
        ("twice", dict(container_id="c1", netns=sandbox)),
        ("empty netns", dict(container_id="c1", netns="")),
        ("never added", dict(container_id="other", netns=sandbox)),
        ("netns gone", dict(container_id="c1", netns="/run/netns/bgpt-missing-0")),
    ]
    for label, kwargs in cases:
        status, output = node.call("DEL", **kwargs)
        assert (status, output) == (0, None), label
    assert node.lease_files() == []


def test_del_after_netns_deleted(node, netns):
    pod = netns("bgpt-pod")
    _, added = node.call("ADD", "c1", f"/run/netns/{pod}")
    run("ip", "netns", "delete", pod)
    status, _ = node.call("DEL", "c1", f"/run/netns/{pod}")
    assert status == 0
    assert added["interfaces"][1]["name"] not in link_names(node.namespace)
    assert node.lease_files() == []


def test_round_robin(node, netns):
    pod = netns("bgpt-pod")
    _, first = node.call("ADD", "c1", f"/run/netns/{pod}")
    node.call("DEL", "c1", f"/run/netns/{pod}")
    _, second = node.call("ADD", "c1", f"/run/netns/{pod}")
    assert first["ips"][0]["address"] != second["ips"][0]["address"]


# Errors.


def test_add_existing_interface_rolls_back(node, netns):
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"
    node.call("ADD", "c1", sandbox)
    links_before = link_names(node.namespace)
    leases_before = node.lease_files()

    status, output = node.call("ADD", "c2", sandbox)  # eth0 exists in the pod already
    assert status == 1
    assert output["code"] == 999
    assert "already exists" in output["details"]
    assert link_names(node.namespace) == links_before
    assert node.lease_files() == leases_before


def test_add_rollback_after_veth(node, netns, tmp_path):
    """A failure after the veth exists (no such bridge) removes the veth and the lease."""
    pod = netns("bgpt-pod")
    links_before = link_names(node.namespace)
    status, output = node.call("ADD", "c1", f"/run/netns/{pod}", bridge="nosuchbr")
    assert status == 1
    assert output["code"] == 999
    assert link_names(node.namespace) == links_before
    assert link_names(pod) == {"lo"}
    assert node.lease_files() == []


ERROR_CASES = [
    # label, call kwargs, expected code
    ("unsupported version", dict(version="0.3.1"), 1),
    ("gc on 1.0.0", dict(command="GC", version="1.0.0"), 1),
    ("status on 0.4.0", dict(command="STATUS", version="0.4.0"), 1),
    ("missing container id", dict(container_id=""), 4),
    ("container id escapes", dict(container_id="../../etc"), 4),
    ("bad ifname", dict(ifname="a/b"), 4),
    ("missing netns", dict(netns=""), 4),
    ("config not json", dict(stdin="{not json"), 6),
    ("config without name", dict(stdin='{"cniVersion": "1.1.0", "type": "bgpnet-cni"}'), 7),
    ("bad subnet", dict(subnet="10.1.2.3/24"), 7),
    ("check without prevResult", dict(command="CHECK"), 7),
    ("netns not found", dict(netns="/run/netns/bgpt-missing-0"), 3),
]


@pytest.mark.parametrize("kwargs, code", [case[1:] for case in ERROR_CASES],
                         ids=[case[0] for case in ERROR_CASES])
def test_error_code(node, netns, kwargs, code):
    pod = netns("bgpt-pod")
    call = {"command": "ADD", "container_id": "c1", "netns": f"/run/netns/{pod}", **kwargs}
    status, output = node.call(call.pop("command"), **call)
    assert status == 1
    assert output["code"] == code
    assert output["msg"]
    assert node.lease_files() == []


def test_check_reports_difference(node, netns):
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"
    _, added = node.call("ADD", "c1", sandbox)
    address = added["ips"][0]["address"]
    run("ip", "-n", pod, "addr", "del", address, "dev", "eth0")

    status, output = node.call("CHECK", "c1", sandbox, prevResult=added)
    assert status == 1
    assert output["code"] == 100
    assert f"address {address} is missing" in output["details"]


def test_version_command(node):
    status, output = node.call("VERSION", stdin='{"cniVersion": "1.1.0"}')
    assert status == 0
    assert output["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_add_escaped_strings(node, netns):
    """Quotes, backslashes, control characters and UTF-8 reach the agent intact."""
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"
    cni_args = 'IgnoreUnknown=1;K8S_POD_NAME=a"b\\c;K8S_POD_NAMESPACE=d\te'
    status, added = node.call("ADD", "c1", sandbox, env={"CNI_ARGS": cni_args},
                              comment='line\nbreak "quoted" back\\slash \x01 \x7f caf\u00e9')
    assert status == 0, added
    assert inet_addresses(pod, "eth0") == [added["ips"][0]["address"]]
    assert node.call("DEL", "c1", sandbox, env={"CNI_ARGS": cni_args}) == (0, None)


ODD_TEXT = 'a"b\\c\td\nE\x01\x1f\x7f caf\u00e9 \u2603'


def test_odd_strings_round_trip(node, netns):
    """The values come back unchanged in the error messages, which quote them with repr."""
    pod = netns("bgpt-pod")
    status, output = node.call("ADD", "c1", f"/run/netns/{pod}",
                               env={"CNI_ARGS": ODD_TEXT})
    assert status == 1
    assert output["msg"] == f"CNI_ARGS item {ODD_TEXT!r} is invalid"
    status, output = node.call("ADD", "c1", f"/run/netns/{pod}", name=ODD_TEXT)
    assert status == 1
    assert output["msg"] == f"name {ODD_TEXT!r} is invalid"


# The C client's fallback when no agent listens.


def test_c_client_fallback_beside(netns, tmp_path):
    """Without an agent, the client execs bgpnet-cni-py from its own directory."""
    client = compile_client(tmp_path, Path("/nonexistent/bgpnet-cni"))
    (tmp_path / "bgpnet-cni-py").symlink_to(PLUGIN)
    node = Node(netns("bgpt-node"), tmp_path / "none", client,
                plugin_config(stateDir=str(tmp_path / "none")))
    assert node.call("STATUS")[1]["code"] == 50
    status, output = node.call("VERSION", stdin='{"cniVersion": "1.1.0"}')
    assert status == 0
    assert output["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]


def test_c_client_fallback_missing(netns, tmp_path):
    client = compile_client(tmp_path, Path("/nonexistent/bgpnet-cni"))
    node = Node(netns("bgpt-node"), tmp_path / "none", client, plugin_config())
    status, output = node.call("ADD", "c1", "/run/netns/bgpt-missing-0")
    assert status == 1
    assert output["code"] == 999
    assert "/nonexistent/bgpnet-cni" in output["details"]


# GC and STATUS.


def test_gc_keeps_valid(node, netns):
    pods = [netns("bgpt-pod") for _ in range(3)]
    added = [node.call("ADD", f"c{index}", f"/run/netns/{pod}")[1]
             for index, pod in enumerate(pods)]
    keep = [{"containerID": "c1", "ifname": "eth0"}]

    status, output = node.call("GC", **{"cni.dev/valid-attachments": keep})
    assert (status, output) == (0, None)
    assert node.lease_files() == [added[1]["ips"][0]["address"].split("/")[0]]
    hosts = link_names(node.namespace)
    assert added[0]["interfaces"][1]["name"] not in hosts
    assert added[1]["interfaces"][1]["name"] in hosts
    assert added[2]["interfaces"][1]["name"] not in hosts


def test_status_ready(node):
    assert node.call("STATUS") == (0, None)


def test_status_full_pool(node, netns):
    pods = [netns("bgpt-pod") for _ in range(2)]
    for index, pod in enumerate(pods):  # a /30 has exactly one leasable address
        node.call("ADD", f"c{index}", f"/run/netns/{pod}", subnet="10.78.0.0/30")
    status, output = node.call("STATUS", subnet="10.78.0.0/30")
    assert status == 1
    assert output["code"] == 50
    assert "10.78.0.0/30" in output["msg"]


def test_full_pool_error_names_pool(node, netns):
    pods = [netns("bgpt-pod") for _ in range(2)]
    node.call("ADD", "c0", f"/run/netns/{pods[0]}", subnet="10.78.0.0/30")
    status, output = node.call("ADD", "c1", f"/run/netns/{pods[1]}", subnet="10.78.0.0/30")
    assert status == 1
    assert "10.78.0.0/30" in output["details"]
    assert link_names(pods[1]) == {"lo"}


def test_no_node_state(netns, tmp_path):
    """Without agent and node.json, ADD is "try again later", STATUS 50, DEL succeeds."""
    namespace = netns("bgpt-node")
    pod = netns("bgpt-pod")
    node = Node(namespace, tmp_path / "none", PLUGIN, plugin_config(stateDir=str(tmp_path / "none")))
    assert node.call("ADD", "c1", f"/run/netns/{pod}")[1]["code"] == 11
    assert node.call("STATUS")[1]["code"] == 50
    assert node.call("DEL", "c1", f"/run/netns/{pod}") == (0, None)


# 50 ADDs at once.


def parallel(node: Node, pods: list[str], command: str) -> list[tuple[int, dict | None]]:
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        futures = [pool.submit(node.call, command, f"c{index}", f"/run/netns/{pod}")
                   for index, pod in enumerate(pods)]
        return [future.result() for future in futures]


def check_parallel(node: Node, pods: list[str], gateway_prefix: str) -> None:
    added = parallel(node, pods, "ADD")
    assert [status for status, _ in added] == [0] * len(pods), [o for s, o in added if s]
    addresses = {output["ips"][0]["address"] for _, output in added}
    assert len(addresses) == len(pods)
    observed = {inet_addresses(pod, "eth0")[0] for pod in pods}
    assert observed == addresses
    assert inet_addresses(node.namespace, "v-net-0") == [gateway_prefix]

    deleted = parallel(node, pods, "DEL")
    assert [status for status, _ in deleted] == [0] * len(pods)


def test_parallel_add_del(node, netns):
    pods = [netns("bgpt-pod") for _ in range(50)]
    check_parallel(node, pods, f"{GATEWAY}/24")
    assert node.lease_files() == []
    assert not any(name.startswith("veth") for name in link_names(node.namespace))


# The reference bridge + host-local plugins, for the same scenarios.


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_reference_same_shape(node, reference, netns, version):
    pod_ours = netns("bgpt-pod")
    pod_reference = netns("bgpt-pod")
    status_ours, ours = node.call("ADD", "c1", f"/run/netns/{pod_ours}", version=version)
    status_ref, theirs = reference.call("ADD", "c1", f"/run/netns/{pod_reference}",
                                        version=version)
    assert (status_ours, status_ref) == (0, 0)
    assert shape(ours) == shape(theirs)
    assert ours["ips"][0]["interface"] == theirs["ips"][0]["interface"]
    assert ours["routes"] == theirs["routes"]


def test_reference_del_idempotent(reference, netns):
    pod = netns("bgpt-pod")
    sandbox = f"/run/netns/{pod}"
    reference.call("ADD", "c1", sandbox)
    for label, netns_path in [("first", sandbox), ("twice", sandbox), ("empty netns", "")]:
        assert reference.call("DEL", "c1", netns_path) == (0, None), label


def test_reference_existing_interface(reference, netns):
    pod = netns("bgpt-pod")
    reference.call("ADD", "c1", f"/run/netns/{pod}")
    status, output = reference.call("ADD", "c2", f"/run/netns/{pod}")
    assert status == 1
    assert output["code"] == 999


@pytest.mark.parametrize("kwargs, code", [
    (dict(version="0.3.9"), 1),
    (dict(container_id=""), 4),
    (dict(stdin="{not json"), 6),
], ids=["unsupported version", "missing container id", "config not json"])
def test_reference_error_code(reference, netns, kwargs, code):
    pod = netns("bgpt-pod")
    call = {"container_id": "c1", "netns": f"/run/netns/{pod}", **kwargs}
    status, output = reference.call("ADD", **call)
    assert status == 1
    assert output["code"] == code


def test_reference_parallel_add_del(reference, netns):
    pods = [netns("bgpt-pod") for _ in range(50)]
    check_parallel(reference, pods, f"{GATEWAY}/24")
    assert reference.lease_files() == []
