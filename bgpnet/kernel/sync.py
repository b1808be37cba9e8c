"""Keep the kernel's routes of our protocol equal to the RIB's desired routes.

Theory of operation: the agent marks prefixes dirty as events change them and calls
``wake()``. ``run()`` takes the whole dirty set at once, reads those prefixes' desired
routes from the RIB, plans them against ``kernel`` (the routes the agent has written or
read from the kernel) and applies the plan in a worker thread. Changes that arrive during a
write land in the next dirty set, so many changes to one prefix coalesce into one
kernel write.

``kernel`` starts from a dump of the kernel's routes of our protocol. Such routes, left
by an earlier run of the agent, are kept until ``sweep()``: only then are routes that
no peer confirmed deleted. ``resync()`` re-reads the kernel and plans every prefix,
which repairs routes that someone else removed or changed.

Rules:
- The route writer is the only code that changes routes, and it only ever changes
  routes of our protocol. A failed route is logged with its errno and retried by the
  next resync, which starts from a fresh dump.
- Planning and applying hold one lock, so a plan is never made against a ``kernel``
  that a write in flight is about to change.
- All netlink work runs on one worker thread of our own, so pod requests on the
  default executor never delay route writes, and the writer's socket is used by one
  thread only.
- A netlink failure of a whole request (a dump, or a batch that could not be sent) is
  logged and sets ``resync_needed``, so it never ends the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bgpnet.errors import NetlinkError
from bgpnet.kernel import routes
from bgpnet.kernel.plan import Plan, plan_prefixes, plan_routes
from bgpnet.model import KernelRoute, Prefix

log = logging.getLogger("bgpnet.fib")

# Per-route INFO lines up to this many changes in one write; above it one summary line,
# and the per-route lines go to DEBUG.
ROUTE_LOG_LIMIT = 100


@dataclass
class FibCounters:
    writes: int = 0
    routes_added: int = 0
    routes_replaced: int = 0
    routes_deleted: int = 0
    route_failures: int = 0


class FibSync:
    def __init__(self, node: str, protocol: int,
                 desired_route: Callable[[Prefix], KernelRoute | None],
                 desired_all: Callable[[], dict[Prefix, KernelRoute]]) -> None:
        self.node = node
        self.protocol = protocol
        self._desired_route = desired_route
        self._desired_all = desired_all
        self.kernel: dict[Prefix, KernelRoute] = {}
        self.dirty: set[Prefix] = set()
        self.swept = False
        self.counters = FibCounters()
        self._writer: routes.RouteWriter | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fib")
        # Set when a write or dump failed as a whole; the agent then resyncs soon.
        self.resync_needed = asyncio.Event()

    def open(self) -> int:
        """Open the route writer and read our routes already in the kernel; return their count."""
        self._writer = routes.RouteWriter(self.protocol)
        self.kernel = routes.dump_routes(self.protocol)
        return len(self.kernel)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def mark(self, prefixes: set[Prefix]) -> None:
        if prefixes:
            self.dirty |= prefixes
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, before_write: Callable[[], object] | None = None) -> None:
        """Write dirty prefixes as they come, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if before_write is not None:
                result = before_write()
                if asyncio.iscoroutine(result):
                    await result
            if not self.dirty:
                continue
            async with self._lock:
                dirty, self.dirty = self.dirty, set()
                await self._apply_locked(plan_prefixes(dirty, self._desired_route, self.kernel))

    async def resync(self) -> None:
        """Re-read the kernel's routes of our protocol and plan every prefix again."""
        async with self._lock:
            self.resync_needed.clear()
            try:
                self.kernel = await self._in_worker(routes.dump_routes, self.protocol)
            except (NetlinkError, OSError) as exc:
                log.warning("route dump failed node=%s error=%s; retrying soon", self.node, exc)
                self.resync_needed.set()
                return
            plan = plan_routes(self._desired_all(), self.kernel, delete_extra=self.swept)
            if plan:
                log.warning("resync repairs kernel routes node=%s add=%d replace=%d delete=%d",
                            self.node, len(plan.add), len(plan.replace), len(plan.delete))
            await self._apply_locked(plan)

    async def sweep(self, why: str) -> None:
        """Delete the routes that were in the kernel at start and that no peer confirmed."""
        async with self._lock:
            if self.swept:
                return
            self.swept = True
            plan = plan_routes(self._desired_all(), self.kernel, delete_extra=True)
            log.info("sweeping unconfirmed routes node=%s reason=%r stale=%d",
                     self.node, why, len(plan.delete))
            await self._apply_locked(plan)

    async def _apply_locked(self, plan: Plan) -> None:
        if not plan:
            return
        assert self._writer is not None
        try:
            result = await self._in_worker(self._writer.apply, plan)
        except (NetlinkError, OSError) as exc:
            # Which requests the kernel applied is unknown: re-read it soon.
            log.warning("route write failed node=%s routes=%d error=%s; resyncing soon",
                        self.node, len(plan), exc)
            self.counters.route_failures += len(plan)
            self.resync_needed.set()
            return
        self._record(plan, result)

    def _in_worker(self, function, *args):
        return asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def remove_all(self) -> int:
        """Delete every route of ours recorded in ``kernel``; return how many failed.

        Raises NetlinkError or OSError when the batch could not be sent at all.
        """
        async with self._lock:
            if self._writer is None or not self.kernel:
                return 0
            plan = plan_routes({}, self.kernel)
            log.info("removing routes node=%s count=%d", self.node, len(plan.delete))
            result = await self._in_worker(self._writer.apply, plan)
            self._record(plan, result)
            return len(result.failed)

    def _record(self, plan: Plan, result: routes.ApplyResult) -> None:
        counters = self.counters
        counters.writes += 1
        failed = {route.prefix for route, _, _ in result.failed}
        for route, action, errno in result.failed:
            counters.route_failures += 1
            log.warning("route %s failed node=%s prefix=%s nexthop=%s errno=%d",
                        action, self.node, route.prefix, hops(route), errno)
        kernel = self.kernel
        if failed:
            for route in (*plan.add, *plan.replace):
                if route.prefix not in failed:
                    kernel[route.prefix] = route
            for route in plan.delete:
                if route.prefix not in failed:
                    kernel.pop(route.prefix, None)
        else:
            # The common case: one hash per route, where the checks above cost one more.
            kernel.update([(route.prefix, route) for route in plan.add])
            kernel.update([(route.prefix, route) for route in plan.replace])
            for route in plan.delete:
                kernel.pop(route.prefix, None)
        counters.routes_added += result.added
        counters.routes_replaced += result.replaced
        counters.routes_deleted += result.deleted
        if result.unconfirmed:
            self.resync_needed.set()
        self._log(plan, failed)

    def _log(self, plan: Plan, failed: set[Prefix]) -> None:
        total = len(plan)
        per_route = logging.INFO if total <= ROUTE_LOG_LIMIT else logging.DEBUG
        if total > ROUTE_LOG_LIMIT:
            log.info("routes written node=%s installed=%d replaced=%d withdrawn=%d failed=%d",
                     self.node, len(plan.add), len(plan.replace), len(plan.delete), len(failed))
        if not log.isEnabledFor(per_route):
            return
        for word, batch in (("installed", plan.add), ("replaced", plan.replace),
                            ("withdrawn", plan.delete)):
            for route in batch:
                if route.prefix not in failed:
                    log.log(per_route, "route %s node=%s prefix=%s nexthop=%s", word, self.node,
                            route.prefix, hops(route))


def hops(route: KernelRoute) -> str:
    return ",".join(str(hop) for hop in route.nexthops)
