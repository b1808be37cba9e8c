"""The manifest: a record of what ``lab up`` created, so ``lab down`` removes exactly that.

Role: one JSON file, ``<runtime_dir>/manifest.json``, rewritten atomically (temp file,
rename) after every recorded step. The builder records an object *before* creating it
(a namespace) or right after it exists (a process, whose PID is not known earlier),
so a build that fails or is killed midway leaves a manifest that covers what it made.

A process is recorded with its start time (field 22 of ``/proc/<pid>/stat``) so that a
PID reused by an unrelated process after a reboot or a long pause is never signalled.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bgpnet.errors import LabError


@dataclass(frozen=True)
class ProcessRecord:
    node: str
    name: str  # zebra, bgpd or agent
    pid: int
    start_time: int  # clock ticks since boot, /proc/<pid>/stat field 22


@dataclass(frozen=True)
class PodRecord:
    node: str
    name: str
    namespace: str
    address: str  # as the pod-attachment code printed it, with prefix length


@dataclass
class Manifest:
    """The mutable record of one lab, saved to ``path`` by ``save``."""

    path: Path
    lab: str
    topology: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)
    pods: list[PodRecord] = field(default_factory=list)

    def add_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces.append(name)
        self.save()

    def add_process(self, record: ProcessRecord) -> None:
        self.processes.append(record)
        self.save()

    def add_pod(self, record: PodRecord) -> None:
        self.pods.append(record)
        self.save()

    def save(self) -> None:
        data = {
            "lab": self.lab,
            "topology": self.topology,
            "namespaces": self.namespaces,
            "processes": [asdict(record) for record in self.processes],
            "pods": [asdict(record) for record in self.pods],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.rename(tmp, self.path)


def load(path: Path) -> Manifest | None:
    """Read the manifest at ``path``; return None when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LabError(f"read manifest {path} failed: {exc}; remove the lab's namespaces "
                       "by hand (ip netns list) and delete the file") from None
    try:
        return Manifest(
            path=path,
            lab=str(data["lab"]),
            topology=str(data["topology"]),
            namespaces=[str(name) for name in data["namespaces"]],
            processes=[ProcessRecord(**record) for record in data["processes"]],
            pods=[PodRecord(**record) for record in data["pods"]],
        )
    except (KeyError, TypeError) as exc:
        raise LabError(f"read manifest {path} failed: missing or unexpected field {exc}; "
                       "remove the lab's namespaces by hand (ip netns list) and delete the file") from None
