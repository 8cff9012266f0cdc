"""The composition root: ``Herald(config)`` builds the store, the writer, the receivers and the
background jobs, starts them in order and stops them in reverse. No other module wires parts."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import grpc
import httpx
from aiohttp import web

from collector._proto import automations_pb2_grpc, herald_pb2_grpc
from collector.automations.actions import BACKOFF_BASE_SECONDS, ActionExecutor
from collector.automations.background import BackgroundTasks, WorkerThreads
from collector.automations.dispatch import FiringDispatcher
from collector.automations.emitter import EventEmitter, EventIngest
from collector.automations.evaluation import (
    MAX_BACKLOG_EVENTS,
    CommitFeed,
    EvaluationLoop,
    LeaderLookup,
)
from collector.automations.evaluator import Evaluator
from collector.automations.events import Cause, guard_skips
from collector.automations.leader_role import LeaderRole
from collector.automations.runtime import AutomationRuntime
from collector.automations.service import AutomationService
from collector.automations.templates import TemplateEngine
from collector.clock import Clock, SystemClock
from collector.cluster.automation_state import PgAutomationState
from collector.cluster.connections import PgConnections
from collector.cluster.leadership import LeaderElection
from collector.config import AutomationsConfig, Config
from collector.domain.automation_records import StoredAutomation
from collector.domain.automation_state import AutomationStateStore
from collector.domain.event_store import CommitNotices, EventReads
from collector.domain.events import Limits
from collector.domain.self_metrics import SelfMetrics
from collector.errors import ConfigError, StoreError
from collector.pipeline.ingest import NativeIngest
from collector.pipeline.otlp_ingest import OtlpIngest
from collector.pipeline.otlp_workers import MappingPool
from collector.pipeline.tail import TailHub
from collector.process_memory import tune_allocators
from collector.server.admission import GrpcAdmission, InflightBudget
from collector.server.auth import Authenticator, bind_allowed, split_address
from collector.server.automations_grpc import AutomationsServicer
from collector.server.automations_http import automations_routes
from collector.server.feed_http import feed_routes
from collector.server.health_http import health_routes
from collector.server.http_server import Route, build_app
from collector.server.listen import bind_grpc, bind_http
from collector.server.native_grpc import HeraldServicer
from collector.server.native_http import native_routes
from collector.server.otlp_grpc import LogsServicer, MetricsServicer, TraceServicer
from collector.server.otlp_http import otlp_routes
from collector.server.prefect_websockets import prefect_routes
from collector.server.prometheus_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from collector.server.prometheus_metrics import PrometheusMetrics
from collector.store.arrow_batch import columns_to_arrow
from collector.store.automations_store import AutomationStore
from collector.store.duckdb_store import EventStore
from collector.store.lake.automation_events import LakeAutomationEvents, OneHostAutomationStore
from collector.store.lake.follower import LakeCommits, SnapshotFollower
from collector.store.lake.lake_store import LakeLocation, LakeStore
from collector.store.lake.upkeep import LakeUpkeep
from collector.store.reader import EventReader
from collector.store.retention import RetentionPlan
from collector.store.writer import BatchWriter
from collector.version import herald_version
from collector.web.context import WebContext
from collector.web.rendering import PageRenderer
from collector.web.routes import web_routes

log = logging.getLogger(__name__)


def limits_from(config: Config) -> Limits:
    c = config.limits
    return Limits(
        max_labels_per_resource=c.max_labels_per_resource,
        max_related_resources=c.max_related_resources,
        max_event_name_length=c.max_event_name_length,
        max_event_bytes=c.max_event_bytes,
        max_future_seconds=c.max_future_seconds,
    )


def backlog_events(cfg: Config) -> int:
    """How many committed events the live tail and the automations may each hold while they
    catch up (past it they re-read or report lag): what ``storage.queue_max_bytes`` holds, at
    ``approx_bytes``' measured ~700 bytes an event (docs/configuration.md#memory-budget)."""
    return max(10_000, min(MAX_BACKLOG_EVENTS, cfg.storage.queue_max_bytes // 700))


def build_automations(
    store: EventStore | None,
    commits: CommitFeed,
    ingest: EventIngest,
    config: AutomationsConfig,
    clock: Clock,
    *,
    http: httpx.AsyncClient | None = None,
    backoff_base: float | None = None,
    shutdown_grace_seconds: float = 5.0,
    max_backlog_events: int = MAX_BACKLOG_EVENTS,
    metrics: SelfMetrics | None = None,
    state: AutomationStateStore | None = None,
    follow_store_seconds: float | None = None,
) -> AutomationRuntime:
    """The automations runtime, its parts built and wired: it evaluates what ``commits``
    announces and emits its events through ``ingest``. Without ``http`` it makes (and closes)
    its own client for webhooks. The server and the runtime's tests build it here.

    Its state is ``store``'s automation tables unless ``state`` is given (a lake's);
    ``follow_store_seconds`` makes it evaluate what the store holds rather than what
    ``commits`` carries (a lake, where other collectors commit too; EvaluationLoop)."""
    if state is None:
        assert store is not None, "build_automations needs a store or a state"
        state = AutomationStore(store)
    client = http or httpx.AsyncClient(follow_redirects=False)
    templates = TemplateEngine(config.template_timeout_seconds)
    # The runtime's store work and the API's on threads of their own (see background.py).
    store_threads = WorkerThreads(2, "herald-automations")
    api_threads = WorkerThreads(2, "herald-automations-api")
    tasks = BackgroundTasks()
    emitter = EventEmitter(ingest, tasks, state, store_threads, clock)

    async def set_enabled(automation_id: UUID, enabled: bool, cause: Cause) -> StoredAutomation:
        # pause-/resume-automation actions act through the service, which is built last: it
        # needs the dispatcher, which needs this executor.
        return await service.set_enabled(automation_id, enabled, cause)

    executor = ActionExecutor(
        config,
        clock,
        http=client,
        emit=emitter.store,
        set_enabled=set_enabled,
        templates=templates,
        backoff_base=BACKOFF_BASE_SECONDS if backoff_base is None else backoff_base,
        metrics=metrics,
    )
    dispatcher = FiringDispatcher(
        config, state, store_threads, executor, emitter, tasks, clock, metrics=metrics
    )
    leaders = LeaderLookup(state)
    evaluator = Evaluator(clock, leader_processed=leaders.processed, skip=guard_skips)
    evaluation = EvaluationLoop(
        config,
        evaluator,
        leaders,
        state,
        store_threads,
        dispatcher,
        clock,
        max_backlog_events=max_backlog_events,
        follow_store_seconds=follow_store_seconds,
    )
    service = AutomationService(state, api_threads, evaluation, dispatcher, emitter, clock)

    async def close() -> None:
        templates.close()
        if http is None:
            await client.aclose()
        api_threads.close()
        store_threads.close()

    return AutomationRuntime(
        evaluation,
        dispatcher,
        service,
        tasks,
        commits=commits,
        close=close,
        shutdown_grace_seconds=shutdown_grace_seconds,
    )


class Herald:
    """One Herald server process: receivers, store writer, query API and background jobs."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.limits = limits_from(config)
        self.auth = Authenticator(config.auth)
        self.version = herald_version()
        # The server's own numbers (GET /metrics): one object, handed to every part that counts.
        self.metrics = PrometheusMetrics(self.version)
        self.draining = False  # stop() began: /readyz answers 503 from then on
        self.store: EventStore | LakeStore | None = None
        self.writer: BatchWriter | None = None
        self.mapping_pool: MappingPool | None = None  # OTLP mapping workers (ingest.*)
        self.reader: EventReads | None = None  # the DuckDB EventReader, seen through its interface
        self.web: WebContext | None = None  # the web UI's pages (collector/web/)
        self.tail: TailHub | None = None
        self.automations: AutomationRuntime | None = None  # what the automations API serves
        # A lake shared through PostgreSQL: the cluster's automations state, the election of
        # the one collector that evaluates, and what it runs while it leads.
        self.cluster_state: PgAutomationState | None = None
        self.election: LeaderElection | None = None
        self.leader: LeaderRole | None = None
        self._automations_file: EventStore | None = None  # a one-host lake's automations
        self.follower: SnapshotFollower | None = None  # a lake: other collectors' commits
        self._grpc: grpc.aio.Server | None = None
        self._grpc_serving = False
        self.admission: GrpcAdmission | None = None
        self._http: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.grpc_address = ""
        self.http_address = ""

    async def start(self) -> None:
        """Bind both ports, open the store, start the writer, then serve (real ports recorded).

        The ports are bound before the store is opened, so a start that fails on an address
        (a port in use, a host that does not resolve) leaves no DuckDB file behind."""
        cfg = self.config
        # Before the server's threads start (collector/process_memory.py).
        tune_allocators()
        bind_allowed(cfg.server.grpc, self.auth, cfg.server.insecure)
        bind_allowed(cfg.server.http, self.auth, cfg.server.insecure)
        tls = self._tls()
        http_sockets = bind_http(cfg.server.http)
        try:
            self._grpc = self._bind_grpc(tls)
        except BaseException:
            for sock in http_sockets:
                sock.close()
            raise
        try:
            await self._open(http_sockets)
        except BaseException:
            for sock in http_sockets:  # not yet handed to aiohttp (closing twice is harmless)
                sock.close()
            await self._release_unserved_grpc()
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        if isinstance(self.store, LakeStore):
            self._tasks.append(asyncio.create_task(self._upkeep_loop(), name="lake-upkeep"))
        if self.election is not None:
            # Leads the leader-only jobs, and evaluates automations if they are on (LeaderRole).
            self.election.start()
        elif cfg.automations.enabled:
            assert self.automations is not None
            await self.automations.start()

    async def _open(self, http_sockets: list[socket.socket]) -> None:
        """Open the store and the parts on it, then serve on the bound ports."""
        cfg = self.config
        if cfg.storage.backend == "ducklake":
            # A lake several collectors share (docs/scale-out.md); the same writer and reader.
            location = LakeLocation.parse(cfg.storage.catalog, cfg.storage.data_path)
            self.store = await asyncio.to_thread(
                LakeStore,
                location,
                memory_limit=cfg.query.sql_memory_limit,
                spill_limit=cfg.query.sql_spill_limit,
            )
        else:
            self.store = await asyncio.to_thread(
                EventStore,
                cfg.storage.path,
                checkpoint_wal_bytes=cfg.storage.checkpoint_wal_bytes,
                memory_limit=cfg.query.sql_memory_limit,
                spill_limit=cfg.query.sql_spill_limit,
            )
        self.writer = BatchWriter(
            self.store,
            batch_max_events=cfg.storage.batch_max_events,
            queue_max_events=cfg.storage.queue_max_events,
            queue_max_bytes=cfg.storage.queue_max_bytes,
            metrics=self.metrics,
        )
        self.writer.start()
        self.reader = EventReader(self.store, cfg.query, clock=self.clock)
        self.tail = TailHub(
            asyncio.get_running_loop(),
            cfg.query.tail_buffer_events,
            max_subscribers=cfg.query.max_tail_subscribers,
            buffer_bytes=cfg.query.tail_buffer_bytes,
            max_backlog_events=backlog_events(cfg),
            metrics=self.metrics,
        )
        commits: CommitNotices = self.writer
        if isinstance(self.store, LakeStore):
            # The live tail shows every collector's events: the others' from the lake's new
            # snapshots (storage.lake_follow_interval_seconds behind them).
            tail = self.tail
            self.follower = SnapshotFollower(
                self.store,
                cfg.storage.lake_follow_interval_seconds,
                wanted=lambda: tail.subscriber_count > 0,
            )
            await asyncio.to_thread(self.follower.start)
            commits = LakeCommits(self.writer, self.follower)
        commits.add_listener(self.tail.on_commit)
        self._watch()
        ingest = NativeIngest(self.writer, self.limits, metrics=self.metrics)
        # Automations emit their events through the same ingest step as every producer.
        self.automations = await self._automations_runtime(ingest)
        if cfg.ingest.mapping_workers:
            # OTLP requests are mapped in worker processes that build the writer's Arrow batch
            # with the store's own columns_to_arrow (collector/pipeline/otlp_workers.py).
            self.mapping_pool = MappingPool(
                cfg.ingest.mapping_workers,
                columns_to_arrow,
                max_queued_bytes=cfg.ingest.mapping_queue_bytes,
                metrics=self.metrics,
            )
        otlp = OtlpIngest(self.writer, self.limits, metrics=self.metrics, pool=self.mapping_pool)
        await self._start_grpc(ingest, otlp)
        health = health_routes(
            self.version, self.readiness, self.metrics.render, METRICS_CONTENT_TYPE
        )
        self.web = WebContext(
            self.reader,
            self.tail,
            self.automations.service,
            self.auth,
            self.clock,
            PageRenderer(auth_enabled=self.auth.enabled),
        )
        await self._start_http(
            [
                *health,
                *native_routes(ingest),
                *otlp_routes(otlp),
                *feed_routes(self.reader),
                *web_routes(self.web),
                *automations_routes(self.automations.service, self.auth),
                *prefect_routes(self.auth, ingest, self.reader, self.tail, self.clock),
            ],
            http_sockets,
        )

    async def _automations_runtime(self, ingest: NativeIngest) -> AutomationRuntime:
        """The automations runtime the API serves from (and that evaluates, on one host).

        On a lake with a PostgreSQL catalog the automations state is the cluster's, in that
        database; this runtime is never started, and the collector that wins the election
        evaluates in a runtime of its own (``LeaderRole``), fenced by its term. On a one-host
        lake (sqlite:/duckdb: catalog) the automation tables stay in the DuckDB file at
        ``storage.path`` and this runtime evaluates, reading events from the lake."""
        cfg = self.config
        assert self.writer is not None
        grace = cfg.server.shutdown_grace_seconds
        writer = self.writer

        def runtime(
            store: EventStore | None,
            state: AutomationStateStore | None = None,
            follow: float | None = None,
        ) -> AutomationRuntime:
            """On ``store``'s automation tables, or on ``state`` (a lake's)."""
            return build_automations(
                store,
                writer,
                ingest,
                cfg.automations,
                self.clock,
                state=state,
                follow_store_seconds=follow,
                shutdown_grace_seconds=grace,
                max_backlog_events=backlog_events(cfg),
                metrics=self.metrics,
            )

        store = self.store
        if not isinstance(store, LakeStore):
            return runtime(store)
        follow = cfg.storage.lake_follow_interval_seconds
        events = LakeAutomationEvents(store)
        kind, _, dsn = cfg.storage.catalog.partition(":")
        if kind == "sqlite" and cfg.automations.enabled:
            # Several collectors may share a sqlite: lake, and nothing there elects one
            # evaluator; measured, the evaluator's reads also held the catalog's lock against
            # the writer's commits ("database is locked").
            raise ConfigError(
                "automations on a lake need a postgres: catalog (one elected leader among the "
                "collectors) or a duckdb: catalog (one collector); with a sqlite: catalog set "
                "automations.enabled = false"
            )
        if kind != "postgres":
            self._automations_file = await asyncio.to_thread(EventStore, cfg.storage.path)
            state = OneHostAutomationStore(self._automations_file, events)
            return runtime(None, state, follow)
        shared = PgAutomationState(PgConnections(dsn, application_name="herald"), events)
        self.cluster_state = shared

        def evaluating(term: int) -> AutomationRuntime:
            return runtime(None, shared.fenced(term), follow)

        self.leader = LeaderRole(evaluating, shared.revision, evaluate=cfg.automations.enabled)
        self.election = LeaderElection(
            dsn, on_elected=self.leader.elected, on_deposed=self.leader.deposed
        )
        return runtime(None, shared)

    def leads(self) -> bool:
        """Whether this collector runs the leader-only jobs (automations, lake upkeep): the
        elected leader of a cluster; a collector on its own always."""
        return self.leader.leading if self.leader is not None else True

    def _tls(self) -> tuple[bytes, bytes] | None:
        tls = self.config.tls
        if not tls.cert_file:
            return None
        try:
            pair = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
            # Checked here, before anything is bound: gRPC would only log C-core lines and
            # fail the bind, and aiohttp would fail after the store was opened.
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                tls.cert_file, tls.key_file
            )
        except ssl.SSLError as exc:
            raise ConfigError(
                f"tls: {tls.cert_file} and {tls.key_file} (tls.cert_file, tls.key_file) are not "
                f"a PEM certificate and its private key ({exc.reason or exc})"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"tls: cannot read {exc.filename} (tls.cert_file, tls.key_file): {exc.strerror}"
            ) from None
        return pair

    async def _release_unserved_grpc(self) -> None:
        """A gRPC server that was bound but never started keeps its port until the process
        exits; starting and stopping it at once releases it."""
        if self._grpc is not None and not self._grpc_serving:
            await self._grpc.start()
            await self._grpc.stop(None)
            self._grpc = None

    def _bind_grpc(self, tls: tuple[bytes, bytes] | None) -> grpc.aio.Server:
        """The gRPC server, its port bound, not yet serving (``_start_grpc`` adds the services)."""
        server_cfg = self.config.server
        limit = server_cfg.max_receive_bytes
        self.admission = GrpcAdmission(
            self.auth,
            InflightBudget(server_cfg.max_inflight_bytes),
            max_calls=server_cfg.grpc_max_concurrent_rpcs,
            max_request_bytes=limit,
            metrics=self.metrics,
        )
        server = grpc.aio.server(
            interceptors=[self.admission],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail loudly
                # No BDP probing: with it, gRPC widens every stream's flow-control window (to
                # ~16 MiB measured) and buffers that much of a request nobody has asked for
                # yet, e.g. one waiting for admission. Without it an unread request holds one
                # 64 KiB window; a request being read still gets a window for its whole size.
                ("grpc.http2.bdp_probe", 0),
                # One connection cannot open more streams than the whole server handles.
                ("grpc.max_concurrent_streams", server_cfg.grpc_max_concurrent_rpcs),
            ],
        )
        credentials = grpc.ssl_server_credentials([tls]) if tls else None
        port = bind_grpc(server, server_cfg.grpc, credentials)
        host, _ = split_address(server_cfg.grpc)
        self.grpc_address = f"{host}:{port}"
        return server

    async def _start_grpc(self, ingest: NativeIngest, otlp: OtlpIngest) -> None:
        server = self._grpc
        assert server is not None and self.reader is not None and self.tail is not None
        herald_pb2_grpc.add_HeraldServicer_to_server(
            HeraldServicer(ingest, self.reader, self.tail, self.auth, metrics=self.metrics), server
        )
        assert self.automations is not None
        automations_pb2_grpc.add_AutomationsServicer_to_server(
            AutomationsServicer(self.automations.service, self.auth), server
        )
        # OTLP on the same server and port as the native API (SPEC §3: both on :4317).
        for otlp_servicer in (TraceServicer, LogsServicer, MetricsServicer):
            otlp_servicer(otlp, self.auth).add_to_server(server)
        await server.start()
        self._grpc_serving = True

    async def _start_http(self, routes: list[Route], sockets: list[socket.socket]) -> None:
        app = build_app(routes, self.auth, self.config.server.max_receive_bytes)
        # auto_decompress off: read_body gunzips itself, enforcing the limit on the inflated size.
        # shutdown_timeout: aiohttp's graceful stop waits that long for a handler in progress,
        # and one whose body was still arriving when the connection was closed never gets the
        # rest (measured: every few SIGTERMs under load, stop waited for the client's own
        # 30 s timeout); bounded by the grace time, that handler is cancelled, unacknowledged.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            auto_decompress=False,
            shutdown_timeout=self.config.server.shutdown_grace_seconds,
        )
        await runner.setup()
        self._http = runner
        ctx = None
        if self.config.tls.cert_file:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.config.tls.cert_file, self.config.tls.key_file)
        # The sockets were bound by ``bind_http`` before the store opened; serving starts here.
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ctx).start()
        host, _ = split_address(self.config.server.http)
        self.http_address = f"{host}:{sockets[0].getsockname()[1]}"

    async def _upkeep_loop(self) -> None:
        """The lake's upkeep (compaction, snapshot expiry, file cleanup), run by the leader only
        — one collector at a time, so the jobs do not conflict with each other."""
        assert isinstance(self.store, LakeStore)
        storage = self.config.storage
        upkeep = LakeUpkeep(self.store, timedelta(seconds=storage.lake_snapshot_keep_seconds))
        while True:
            await asyncio.sleep(storage.lake_upkeep_interval_seconds)
            if not self.leads():
                continue
            try:
                report = await asyncio.to_thread(upkeep.run, self.clock.now())
            except StoreError as exc:  # the catalog away: the next round tries again
                log.warning("lake upkeep failed: %s", exc)
                continue
            log.info(
                "lake upkeep: %d -> %d data files in %.1f s%s",
                report.files_before,
                report.files_after,
                sum(report.seconds.values()),
                f" (failed: {', '.join(report.errors)})" if report.errors else "",
            )

    async def _retention_loop(self) -> None:
        interval = self.config.storage.retention_interval_seconds
        while True:
            if not self.leads():  # in a cluster, the leader deletes for everyone
                await asyncio.sleep(interval)
                continue
            try:
                deleted = await self.run_retention()
                self.metrics.retention_run("done", deleted)
                if deleted:
                    log.info("retention deleted %d events", deleted)
            except StoreError as exc:
                self.metrics.retention_run("failed", 0)
                log.warning("retention failed: %s", exc)
            await asyncio.sleep(interval)

    async def run_retention(self) -> int:
        """One retention pass at the clock's now: bounded slices on the writer thread, between
        group commits (ingest waits for one slice at most), then a checkpoint there once no
        reader is open. Cancelling it stops after the slice in progress."""
        assert self.store is not None and self.writer is not None
        store, writer = self.store, self.writer
        plan = RetentionPlan.at(self.config.storage, self.clock.now())
        deleted = 0
        while True:
            n: int = await asyncio.wrap_future(writer.call(lambda: plan.delete_slice(store)))
            deleted += n
            if n < plan.slice_rows:
                break
        if deleted:
            writer.request_checkpoint()
        return deleted

    def _watch(self) -> None:
        """The gauges of /metrics, read from the parts' own state when scraped."""
        writer, tail, admission = self.writer, self.tail, self.admission
        assert writer is not None and tail is not None and admission is not None
        gauge = self.metrics.gauge
        gauge(
            "herald_ingest_queue_events",
            "Events waiting for their group commit",
            lambda: writer.queued_events,
        )
        gauge(
            "herald_ingest_queue_bytes",
            "About what the events waiting for their commit weigh (their JSON text)",
            lambda: writer.queued_bytes,
        )
        gauge(
            "herald_tail_subscribers",
            "Live-tail subscribers connected",
            lambda: tail.subscriber_count,
        )
        gauge(
            "herald_grpc_calls_in_flight",
            "gRPC calls admitted and not yet answered",
            lambda: admission.calls,
        )
        gauge(
            "herald_grpc_inflight_bytes",
            "gRPC request bytes held (server.max_inflight_bytes bounds them)",
            lambda: admission.budget.in_use,
        )

    def readiness(self) -> dict[str, str | None]:
        """What ``/readyz`` checks: each check's name → None when it passes, else why not."""
        automations = self.automations
        if not self.config.automations.enabled:
            evaluator = None
        elif self.election is not None:
            # A cluster: the leader evaluates, the others stand by; both are ready.
            evaluator = None if self.election.campaigning else "the leader election is not running"
        elif automations is None or not automations.running:
            evaluator = "the automations evaluator is not running"
        else:
            evaluator = None
        return {
            "store": None if self.store is not None else "the store is not open",
            "writer": None
            if self.writer is not None and self.writer.alive
            else "the writer thread is not running",
            "evaluator": evaluator,
            "draining": "the server is shutting down" if self.draining else None,
        }

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, commit what is queued, close (idempotent).

        First the server says it is draining (``/readyz`` 503) and goes on serving for
        ``server.drain_delay_seconds``, so a load balancer stops sending it work before its
        listeners close."""
        if not self.draining:
            self.draining = True
            delay = self.config.server.drain_delay_seconds
            if delay and self._http is not None:
                await asyncio.sleep(delay)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        grace = self.config.server.shutdown_grace_seconds
        # Both servers drain at once, so SIGTERM takes one grace time, not two.
        if self.web is not None:
            self.web.live.close()  # open live feeds end now, not after the grace time
        closing: list[Awaitable[None]] = []
        if self._grpc is not None:
            closing.append(self._grpc.stop(grace))
            self._grpc = None
        if self._http is not None:
            closing.append(self._http.cleanup())
            self._http = None
        await asyncio.gather(*closing)
        if self.mapping_pool is not None:
            # The receivers have drained: no request waits for a worker any more.
            await asyncio.to_thread(self.mapping_pool.close)
            self.mapping_pool = None
        if self.election is not None:
            # Steps down if it leads (the evaluating runtime stops, its lock is released).
            await self.election.stop()
            self.election = None
        if self.automations is not None:
            # Before the writer: the runner's last events and state go through the store.
            await self.automations.stop()
            self.automations = None
        if self.cluster_state is not None:
            self.cluster_state.close()
            self.cluster_state = None
        if self._automations_file is not None:
            self._automations_file.close()
            self._automations_file = None
        if self.follower is not None:
            await asyncio.to_thread(self.follower.stop)
            self.follower = None
        if self.writer is not None:
            await asyncio.to_thread(self.writer.stop)
            self.writer = None
        if self.tail is not None:
            await asyncio.to_thread(self.tail.close)
        if self.store is not None:
            self.store.close()
            self.store = None
