"""``/metrics``: the session in Prometheus' text format, read from the state database.

Every scrape reads the store, not the actor tree, so a busy Executor never
delays a scrape and a scrape never delays the Executor.  The cost of a scrape
is one grouped pass over tasks and runs plus the events written since the
previous scrape: dispatch latency and restarts are folded in incrementally,
so a long run's event log is read once, not once per scrape.

Dispatch latency is measured for first attempts, from the moment the task
could go (the run started, the task existed, and its last blocker completed)
to its dispatch: it is the scheduler's delay, not a retry's deliberate backoff.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.events import (
    RunStarted,
    ServiceRestarted,
    TaskCompleted,
    TaskCreated,
    TaskDispatched,
    WorkerRestarted,
)
from protocol.types import TASK_STATUSES
from session.store import StoreReader

__all__ = ["LATENCY_BUCKETS", "SessionMetrics", "render_metrics"]

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_EVENT_BATCH = 5000


def _at(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


class _EventFold:
    """What the metrics need from the event log, advanced by the events since the last scrape."""

    def __init__(self) -> None:
        self.last_id = 0
        self.run_started: datetime | None = None
        self.created: dict[str, datetime] = {}
        self.completed: dict[str, datetime] = {}
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.restarts = {"worker": 0, "service": 0}

    def advance(self, reader: StoreReader) -> None:
        while True:
            batch = reader.events(after_id=self.last_id, limit=_EVENT_BATCH)
            for event_id, at_text, event in batch:
                self.last_id = event_id
                at = _at(at_text)
                if at is None:
                    continue
                if isinstance(event, RunStarted):
                    self.run_started = at
                elif isinstance(event, TaskCreated):
                    self.created[event.task_id] = at
                elif isinstance(event, TaskCompleted):
                    self.completed[event.task_id] = at
                elif isinstance(event, TaskDispatched) and event.attempt == 1:
                    self._observe(reader, event.task_id, at)
                elif isinstance(event, WorkerRestarted):
                    self.restarts["worker"] += 1
                elif isinstance(event, ServiceRestarted):
                    self.restarts["service"] += 1
            if len(batch) < _EVENT_BATCH:
                return

    def _observe(self, reader: StoreReader, task_id: str, dispatched: datetime) -> None:
        row = reader.task(task_id)
        moments = [self.run_started, self.created.get(task_id)]
        moments += [self.completed.get(blocker) for blocker in (row.blocked_by if row else ())]
        known = [moment for moment in moments if moment is not None]
        if not known:
            return
        latency = max(0.0, (dispatched - max(known)).total_seconds())
        self.latency_sum += latency
        for index, bound in enumerate(LATENCY_BUCKETS):
            if latency <= bound:
                self.bucket_counts[index] += 1
                break
        else:
            self.bucket_counts[-1] += 1

    def histogram_buckets(self) -> list[tuple[str, float]]:
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.bucket_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        return buckets


class SessionMetrics(Collector):
    """A Prometheus collector over one session's store; ``open_reader`` gives a read-only connection."""

    def __init__(self, open_reader: Callable[[], StoreReader | None]) -> None:
        self._open_reader = open_reader
        self._fold = _EventFold()
        self._lock = threading.Lock()  # scrapes may overlap; the fold is not shared state to race on

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            reader = self._open_reader()
            if reader is None:  # the session has never run: nothing to count yet
                yield GaugeMetricFamily("executor_up", "1 when the session has a state database", value=0)
                return
            try:
                yield from self._families(reader)
            finally:
                reader.close()

    def _families(self, reader: StoreReader) -> Iterator[Metric]:
        yield GaugeMetricFamily("executor_up", "1 when the session has a state database", value=1)
        by_status = dict.fromkeys(TASK_STATUSES, 0)
        for row in reader.tasks():
            by_status[row.status] = by_status.get(row.status, 0) + 1
        tasks = GaugeMetricFamily("executor_tasks", "Tasks by status", labels=["status"])
        for status, count in by_status.items():
            tasks.add_metric([status], count)
        yield tasks
        open_runs = reader.open_runs()
        yield GaugeMetricFamily("executor_workers_running", "Attempts running now", value=len(open_runs))
        by_node: dict[str, int] = {}
        for run in open_runs:
            by_node[run.node or "local"] = by_node.get(run.node or "local", 0) + 1
        on_node = GaugeMetricFamily("executor_attempts_by_node", "Attempts running now, by node", labels=["node"])
        for node, count in sorted(by_node.items()):
            on_node.add_metric([node], count)
        yield on_node
        yield GaugeMetricFamily(
            "executor_escalations_open", "Questions waiting for the user", value=len(reader.escalations("open"))
        )

        self._fold.advance(reader)
        latency = HistogramMetricFamily(
            "executor_dispatch_latency_seconds",
            "From a task's readiness (run started, blockers completed) to its first dispatch",
        )
        latency.add_metric([], self._fold.histogram_buckets(), sum_value=self._fold.latency_sum)
        yield latency
        restarts = CounterMetricFamily("executor_restarts", "Supervisor restarts", labels=["kind"])
        for kind, count in self._fold.restarts.items():
            restarts.add_metric([kind], count)
        yield restarts

        tokens = CounterMetricFamily(
            "executor_tokens", "Tokens by model and key", labels=["backend", "model", "key_id", "direction"]
        )
        cost = CounterMetricFamily("executor_cost_usd", "Spend by model and key", labels=["backend", "model", "key_id"])
        for spent in reader.spend():
            labels = [spent["backend"], spent["model"] or "", spent["key_id"] or ""]
            tokens.add_metric([*labels, "in"], spent["tokens_in"] or 0)
            tokens.add_metric([*labels, "out"], spent["tokens_out"] or 0)
            cost.add_metric(labels, spent["cost_usd"] or 0.0)
        yield tokens
        yield cost

        agent_labels = ["backend", "role"]
        completed = CounterMetricFamily("executor_agent_tasks_completed", "Attempts completed", labels=agent_labels)
        failed = CounterMetricFamily("executor_agent_tasks_failed", "Attempts failed", labels=agent_labels)
        mean = GaugeMetricFamily(
            "executor_agent_completion_seconds_mean", "Mean wall time of completed attempts", labels=agent_labels
        )
        errors = GaugeMetricFamily(
            "executor_agent_error_ratio", "Failed / finished attempts (0 when none finished)", labels=agent_labels
        )
        for stats in reader.agent_stats():
            labels = [stats.backend, stats.role]
            completed.add_metric(labels, stats.completed)
            failed.add_metric(labels, stats.failed)
            mean.add_metric(labels, stats.mean_completion_s or 0.0)
            errors.add_metric(labels, stats.error_rate)
        yield from (completed, failed, mean, errors)


def render_metrics(folder: Path) -> tuple[CollectorRegistry, Callable[[], bytes]]:
    """A registry holding the session's collector, and the function that renders a scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionMetrics(lambda: StoreReader.open(folder)))
    return registry, lambda: generate_latest(registry)
