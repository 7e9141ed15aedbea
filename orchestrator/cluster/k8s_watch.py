"""Node and event watches, both open at once, resuming where they left off.

A spot notice gives two minutes; a watch that is closed while the other one runs would be blind for
its whole length, so each runs in its own thread and both feed one queue. Each starts with a list
(the nodes' current taints count: a node tainted before orch started is still going away; old events
do not: they are history, not notices) and then watches from the list's ``resourceVersion``, and
every later watch from the last version it saw (bookmarks included), so nothing is missed or
replayed between two watch requests. A ``410 Gone`` (the version is too old for the API server's
cache) starts over with a fresh list.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

from orchestrator.cluster.kubernetes import POOL_LABEL, NodeSignal, _get, explain, signal_from_event, signals_from_node
from orchestrator.cluster.notices import ProviderNotices

EVENT_SELECTOR = "involvedObject.kind=Node"
_DONE = object()


class SignalWatch:
    """Signals from the node watch and the node-event watch, merged; ``passes`` watch requests per
    stream (None: forever, as the controller runs it)."""

    def __init__(
        self,
        api_client,
        notices: ProviderNotices,
        timeout_seconds: int = 300,
        passes: int | None = None,
        on_error: Callable[[str], None] = lambda message: None,
    ):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.notices, self.timeout_seconds, self.passes, self.on_error = notices, timeout_seconds, passes, on_error
        self.queue: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> "SignalWatch":
        for name, target in (("nodes", self._nodes), ("events", self._events)):
            thread = threading.Thread(target=self._guarded, args=(target,), name=f"orch-watch-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()

    def signals(self, poll_s: float = 1.0) -> Iterator[NodeSignal]:
        """Signals as they come, until both watches are done (never, with ``passes=None``)."""
        done = 0
        while done < len(self.threads):
            try:
                item = self.queue.get(timeout=poll_s)
            except queue.Empty:
                continue
            if item is _DONE:
                done += 1
            else:
                yield item

    def run_once(self) -> Iterator[NodeSignal]:
        self.start()
        yield from self.signals()

    # the two streams

    def _guarded(self, target: Callable[[], None]) -> None:
        try:
            target()
        finally:
            self.queue.put(_DONE)

    def _nodes(self) -> None:
        def emit(node: Any) -> None:
            for signal in signals_from_node(node, self.notices):
                self.queue.put(signal)

        def relist() -> str:
            listed = self.core.list_node(label_selector=POOL_LABEL)
            for node in listed.items:
                emit(node)
            return listed.metadata.resource_version

        self._follow(self.core.list_node, {"label_selector": POOL_LABEL}, relist, emit, ("ADDED", "MODIFIED"))

    def _events(self) -> None:
        def emit(event: Any) -> None:
            signal = signal_from_event(event, self.notices)
            if signal is not None:
                self.queue.put(signal)

        def relist() -> str:  # old events are history: only the version to watch from
            return self.core.list_event_for_all_namespaces(
                field_selector=EVENT_SELECTOR, limit=1
            ).metadata.resource_version

        self._follow(
            self.core.list_event_for_all_namespaces,
            {"field_selector": EVENT_SELECTOR},
            relist,
            emit,
            ("ADDED", "MODIFIED"),
        )

    def _follow(
        self, list_call, selector: dict, relist: Callable[[], str], emit: Callable[[Any], None], types: tuple[str, ...]
    ) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        refused = (ApiException, HTTPError, OSError)  # what the client raises when the API server says no or is gone
        what = list_call.__name__
        try:
            version = relist()
        except refused as exc:
            self.on_error(str(explain(exc, f"{what} (starting the watch)")))
            return
        done = 0
        while not self.stopping.is_set() and (self.passes is None or done < self.passes):
            done += 1
            try:
                for change in watch.Watch().stream(
                    list_call,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.timeout_seconds,
                    **selector,
                ):
                    version = _get(change["object"], "metadata", "resource_version") or version
                    if change["type"] in types:
                        emit(change["object"])
                    if self.stopping.is_set():
                        return
            except refused as exc:
                if getattr(exc, "status", None) != 410:
                    self.on_error(str(explain(exc, f"watching {what}")))
                    self.stopping.wait(5.0)
                try:
                    version = relist()  # 410 Gone: too old for the server's cache; start from now
                except refused as relist_exc:
                    self.on_error(str(explain(relist_exc, f"{what} (restarting the watch)")))
                    self.stopping.wait(5.0)


def watch_signals(api_client, notices: ProviderNotices, timeout_seconds: int = 60) -> Iterator[NodeSignal]:
    """The signals of one watch pass (both watches at once, see ``SignalWatch``)."""
    watch = SignalWatch(api_client, notices, timeout_seconds=timeout_seconds, passes=1)
    yield from watch.run_once()
