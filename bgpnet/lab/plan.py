"""Names and the build plan of a lab: which namespaces, veth pairs, bridges and pods.

Role: pure. A ``Topology`` goes in; a ``LabPlan`` comes out, listing everything the
builder creates, in creation order. The builder and the teardown both derive names
from here, so ``down`` removes the same names that ``up`` made.

Naming rules:

- every node, bridge nodes included, gets the namespace ``<lab>-<node>``;
- pods of a bgpnet node are ``pod1`` .. ``podN``, in namespaces ``<lab>-<node>-<pod>``,
  which is also the container id given to the pod-attachment code;
- a bridge node's bridge device inside its namespace has the node's name, and each link
  to it puts the bridge-side veth end, named as in the link's endpoint, in that
  namespace as a bridge port;
- runtime files of a node (FRR sockets and logs, the agent's state and log) live in
  ``<runtime_root>/<lab>/<node>/``; the manifest in ``<runtime_root>/<lab>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bgpnet.lab.topology import AGENT_CONFIG_TARGET, FRR_CONFIG_TARGET, Role, Topology

RUNTIME_ROOT = Path("/run/bgpnet/lab")


@dataclass(frozen=True)
class PodPlan:
    node: str
    name: str
    namespace: str

    @property
    def label(self) -> str:
        return f"{self.node}-{self.name}"


@dataclass(frozen=True)
class NodePlan:
    name: str
    role: Role
    namespace: str
    runtime_dir: Path
    exec_lines: tuple[tuple[str, ...], ...] = ()
    agent_config: Path | None = None
    frr_config: Path | None = None
    pods: tuple[PodPlan, ...] = ()


@dataclass(frozen=True)
class VethPlan:
    """One veth pair: ``a_interface`` in ``a_namespace``, its peer in ``b_namespace``.

    When ``b_bridge`` is set, the peer becomes a port of that bridge device.
    """

    a_namespace: str
    a_interface: str
    b_namespace: str
    b_interface: str
    b_bridge: str | None = None


@dataclass(frozen=True)
class LabPlan:
    lab: str
    topology_path: Path
    runtime_dir: Path
    nodes: tuple[NodePlan, ...]
    veths: tuple[VethPlan, ...]

    @property
    def manifest_path(self) -> Path:
        return self.runtime_dir / "manifest.json"

    @property
    def node_namespaces(self) -> tuple[str, ...]:
        return tuple(node.namespace for node in self.nodes)

    @property
    def pods(self) -> tuple[PodPlan, ...]:
        return tuple(pod for node in self.nodes for pod in node.pods)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, nodes first, then pods."""
        return self.node_namespaces + tuple(pod.namespace for pod in self.pods)

    def with_role(self, role: Role) -> tuple[NodePlan, ...]:
        return tuple(node for node in self.nodes if node.role is role)

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def namespace_name(lab: str, node: str, pod: str | None = None) -> str:
    return f"{lab}-{node}" if pod is None else f"{lab}-{node}-{pod}"


def make_plan(topology: Topology, runtime_root: Path = RUNTIME_ROOT) -> LabPlan:
    """Derive the namespaces, veth pairs and pods of ``topology``."""
    lab = topology.name
    runtime_dir = runtime_root / lab
    nodes = []
    for node in topology.nodes:
        pods = tuple(
            PodPlan(node=node.name, name=f"pod{index}",
                    namespace=namespace_name(lab, node.name, f"pod{index}"))
            for index in range(1, node.pods + 1)
        )
        nodes.append(NodePlan(
            name=node.name,
            role=node.role,
            namespace=namespace_name(lab, node.name),
            runtime_dir=runtime_dir / node.name,
            exec_lines=node.exec_lines,
            agent_config=node.bind_source(AGENT_CONFIG_TARGET) if node.role is Role.AGENT else None,
            frr_config=node.bind_source(FRR_CONFIG_TARGET) if node.role is Role.FRR else None,
            pods=pods,
        ))

    veths = []
    for link in topology.links:
        a, b = link.a, link.b
        if topology.node(a.node).role is Role.BRIDGE:
            a, b = b, a  # keep the bridge side as b
        bridge = b.node if topology.node(b.node).role is Role.BRIDGE else None
        veths.append(VethPlan(
            a_namespace=namespace_name(lab, a.node),
            a_interface=a.interface,
            b_namespace=namespace_name(lab, b.node),
            b_interface=b.interface,
            b_bridge=bridge,
        ))
    return LabPlan(lab=lab, topology_path=topology.path, runtime_dir=runtime_dir,
                   nodes=tuple(nodes), veths=tuple(veths))
