"""Skip tests marked ``integration`` unless they run as root, which they need for netns."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (network namespaces)")
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(skip)
