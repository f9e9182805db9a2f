"""Composition root: configuration → secrets → logging → the supervisor tree (DESIGN 1).

The tree as it stands (children a later capability fills in are absent, not faked)::

    root (rest_for_one)
    ├── infra (rest_for_one)
    │   ├── database        the pool; starts the embedded Postgres when no URL is set
    │   └── coordinator     heartbeats and the bus (Redis with many instances; local else)
    ├── events-relay        forwards events to the instances holding the users' sockets
    │                       (several instances only)
    ├── ai                  the router: providers, breakers, cache, quota, moderation
    ├── ingest              new messages from every session, stored in batches
    ├── pipeline            policy → context → AI → outbox → send; recovery and sweep
    ├── sessions            one_for_one, dynamic: session:<id> per Telegram account
    ├── session-manager     places sessions, holds their leases, starts their actors
    ├── qr-logins           QR logins begun over the API, waiting for their scan
    ├── history-jobs        history imports asked over the API, through the live actors
    ├── api                 the public REST API on server.host:server.port
    ├── admin               health, readiness, metrics, /admin/sessions, /admin/users/…/tier
    └── watchdog            systemd WATCHDOG=1 while the tree is healthy (transient: absent
                            when systemd asked for no watchdog)

``vibee run`` exits 0 after a graceful stop (SIGTERM/SIGINT; a second signal forces the
exit) and non-zero when the tree cannot start or the root supervisor gives up, so that
systemd restarts it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vibee.admin.daemon_routes import daemon_routes
from vibee.admin.health import Readiness
from vibee.admin.listener import HttpListener
from vibee.admin.server import build_admin_app
from vibee.api.admin_routes import tier_routes
from vibee.api.app import CONTEXT, ApiService, build_api_app, settings_from_config
from vibee.automation.events import EventSink
from vibee.automation.history_jobs import HistoryJobs
from vibee.automation.ingest import Ingest
from vibee.automation.pipeline import Pipeline
from vibee.children import AIService, Current, DatabaseService
from vibee.config import Config
from vibee.coord.bus import Message
from vibee.coord.coordinator import Coordinator, CoordinatorService
from vibee.coord.events import EventRelay
from vibee.coord.notices import BusNotices
from vibee.obs import logging as vlog
from vibee.obs import tracing
from vibee.runtime import (
    ChildSpec,
    ChildStartError,
    Notifier,
    Restart,
    Service,
    ShutdownSignals,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    run_watchdog,
)
from vibee.secrets import SecretStore
from vibee.store import Executor
from vibee.store.db import Database
from vibee.telegram.factory import TelegramNotConfigured, gateway_factory
from vibee.telegram.login import GatewayFactory, LoginFlow
from vibee.telegram.manager import SessionManager
from vibee.telegram.qr import QrLogins

log = logging.getLogger("vibee.app")


def prepare_state(config: Config) -> tuple[Path, SecretStore]:
    """Create the state directory, generate missing secrets (embedded database only) and
    register every secret with the log redactor."""
    state_dir = config.state_dir()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SecretStore(config, state_dir)
    if not config.database.url:
        made = store.ensure_generated()
        if made:
            log.info("generated secrets in the state directory", extra={"names": made})
    for name in store.names:
        secret = store.get(name)
        if secret is not None:
            vlog.register_secret(secret.value)
    return state_dir, store


@dataclass(slots=True)
class App:
    """The built tree and what the process loop needs from it."""

    root: Supervisor
    db: Database
    readiness: Readiness
    coordinator: Coordinator


def build(config: Config, state_dir: Path, secrets: SecretStore, notifier: Notifier) -> App:
    """The supervisor tree for ``config`` (not started)."""
    password = secrets.get("database_password")
    db = Database(config.database, state_dir, password.value if password else None)
    readiness = Readiness()
    current = Current()
    redis_password = secrets.get("redis_password")
    coord = Coordinator.from_config(
        config.redis,
        config.ai.cache_max_entries,
        redis_password.value if redis_password else None,
    )
    relay = EventRelay(current.events, coord)
    sink: EventSink = relay if coord.mode == "redis" else current.events

    def on_bus(message: Message) -> None:
        relay.on_bus(message)
        current.on_bus(message)

    coord.bus.on_message(on_bus)
    coord.on_members_changed = current.members_changed

    def infra() -> Supervisor:
        return Supervisor(
            "infra",
            [
                ChildSpec("database", lambda: DatabaseService(db), shutdown_timeout=15),
                ChildSpec("coordinator", lambda: CoordinatorService(coord), shutdown_timeout=5),
            ],
            strategy=Strategy.REST_FOR_ONE,
        )

    def ai() -> AIService:
        current.ai = AIService(config, secrets, db, coord)
        return current.ai

    def ingest() -> Ingest:
        workers = config.workers
        current.ingest = Ingest(
            db.pool, workers.batch_size, workers.queue_size, current.notify, events=sink
        )
        return current.ingest

    def pipeline() -> Pipeline:
        current.pipeline = Pipeline(
            db.pool,
            lambda: current.ai.router if current.ai is not None else None,
            lambda: current.sessions,
            rag=lambda: current.ai.rag if current.ai is not None else None,
            worker_count=config.workers.worker_count,
            max_retries=config.workers.max_retries,
            sweep_s=config.workers.sweep_s,
            owns=current.owns if gateways is not None else None,
            events=sink,
        )
        return current.pipeline

    def sessions_supervisor() -> Supervisor:
        current.sessions = Supervisor("sessions", concurrent_stop=True)
        return current.sessions

    try:
        gateways: GatewayFactory | None = gateway_factory(config, secrets, lambda: db.pool)
    except TelegramNotConfigured as exc:
        log.warning("no Telegram session will run", extra={"reason": str(exc)})
        gateways = None

    def session_manager() -> SessionManager:
        assert current.ingest is not None and gateways is not None
        telegram = config.telegram
        current.manager = SessionManager(
            lambda: current.sessions,
            db.pool,
            secrets.keyring("session_keys"),
            gateways,
            current.ingest,
            max_sessions=telegram.max_sessions,
            per_chat_per_minute=telegram.messages_per_minute_per_chat,
            circuit_threshold=telegram.circuit_threshold,
            retry_delay_s=telegram.retry_delay_s,
            events=sink,
            coordinator=coord,
            on_gained=current.gained,
        )
        return current.manager

    notices = BusNotices(coord)

    async def replayed() -> None:
        # the session may run on another instance: every instance sweeps
        await coord.bus.send(None, {"t": "resync"})

    async def authorized(_session_id: int) -> None:
        await notices.sessions_changed()  # its instance starts the actor now, not at a sweep

    def login(conn: Executor) -> LoginFlow:
        assert gateways is not None
        return LoginFlow(conn, secrets.keyring("session_keys"), gateways, authorized)

    def history_jobs() -> HistoryJobs:
        current.history = HistoryJobs(
            db.pool,
            lambda: current.sessions,
            rag=lambda: current.ai.rag if current.ai is not None else None,
            events=sink,
            instance=coord.instance_id,
        )
        return current.history

    async def history_queued() -> None:
        # tell every instance (this one at once): the one running the session claims it;
        # if Redis loses the notice, the history-jobs poll finds the job within seconds
        await coord.bus.send(None, {"t": "history"})

    api_settings = settings_from_config(config)
    api_app = build_api_app(
        api_settings,
        lambda: db.pool,
        secrets.keyring("jwt_keys"),
        coord.limiter,
        login=login if gateways is not None else None,
        qr=lambda: current.qr,
        history=history_queued,
        events=current.events,
        notices=notices,
    )
    token = secrets.get("admin_token")
    admin_app = build_admin_app(
        readiness,
        token.value if token else None,
        admin_routes=[
            *daemon_routes(lambda: current.sessions, lambda: db.pool, replayed),
            *tier_routes(lambda: db.pool, api_settings.tiers, api_app[CONTEXT].users),
        ],
    )
    children = [ChildSpec("infra", infra, shutdown_timeout=20)]
    if coord.mode == "redis":  # alone, every socket is here: nothing to forward
        relay_spec = ChildSpec(
            "events-relay", lambda: Service("events-relay", relay.run), shutdown_timeout=2
        )
        children.append(relay_spec)
    children += [
        ChildSpec("ai", ai, shutdown_timeout=5),
        # ingest before sessions: when it restarts, the sessions restart too and resume
        # from the last stored seq, so nothing queued in the old ingest is lost
        ChildSpec("ingest", ingest, shutdown_timeout=10),
        ChildSpec("pipeline", pipeline, shutdown_timeout=10),
        ChildSpec("sessions", sessions_supervisor, shutdown_timeout=15),
    ]
    if gateways is not None:
        # stops before the sessions: it hands them over (leave, stop, release, tell peers)
        children.append(ChildSpec("session-manager", session_manager, shutdown_timeout=20))

        def qr_logins() -> QrLogins:
            assert gateways is not None
            current.qr = QrLogins(login, lambda: db.pool, gateways, shared=coord.shared)
            return current.qr

        children.append(ChildSpec("qr-logins", qr_logins, shutdown_timeout=5))
        # after the sessions and their manager: it stops first, putting its jobs back in
        # the queue while the sessions still run (the next owner resumes them)
        children.append(ChildSpec("history-jobs", history_jobs, shutdown_timeout=5))
    root = Supervisor(
        "root",
        [
            *children,
            ChildSpec(
                "api",
                lambda: ApiService(
                    config.server.host, config.server.port, api_app, lambda: db.pool
                ),
                shutdown_timeout=10,
            ),
            ChildSpec(
                "admin",
                lambda: HttpListener("admin", config.admin.host, config.admin.port, admin_app),
                shutdown_timeout=5,
            ),
            ChildSpec(
                "watchdog",
                lambda: Service("watchdog", partial(run_watchdog, notifier, lambda: root.healthy)),
                restart=Restart.TRANSIENT,
                shutdown_timeout=1,
            ),
        ],
        strategy=Strategy.REST_FOR_ONE,
    )

    async def database_ready() -> None:
        await db.ping()

    async def coordinator_ready() -> None:
        await coord.ping()

    async def tree_ready() -> None:
        if not root.healthy:
            raise RuntimeError("the supervisor tree is not running")

    readiness.add("database", database_ready)
    if coord.mode == "redis":
        readiness.add("redis", coordinator_ready)
    readiness.add("supervisor", tree_ready)
    return App(root, db, readiness, coord)


def root_cause(error: BaseException) -> BaseException:
    """The innermost ``__cause__`` of a chain of supervisor errors."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def settle_heap() -> None:
    """Once started: what is alive now (modules, the tree, its children) is moved out of
    the garbage collector's sight (``gc.freeze``), so that a full collection scans only
    what was made since — its pauses, which stall every chat at once, stay short (in
    ``scripts/bench pipeline``: 34 → 10 ms)."""
    gc.collect()
    gc.freeze()


async def serve(config: Config) -> int:
    """Run the tree until a signal or until it gives up. Returns the exit code."""
    notifier = Notifier.from_env()
    state_dir, secrets = prepare_state(config)
    app = build(config, state_dir, secrets, notifier)
    root = app.root

    def ready() -> None:
        settle_heap()
        log.info("vibee ready", extra={"state_dir": str(state_dir)})
        notifier.ready("running")

    def stopping() -> None:
        log.info("vibee stopping")
        notifier.stopping("stopping")

    notifier.status("starting")
    with ShutdownSignals(on_shutdown=stopping) as signals:
        try:
            await root.run(
                signals.requested,
                shutdown_timeout=config.runtime.shutdown_timeout_s,
                on_ready=ready,
            )
        except ChildStartError as exc:
            log.error("vibee could not start", extra={"error": str(root_cause(exc))})
            notifier.stopping("start failed")
            return 1
        except SupervisorGaveUp as exc:
            log.critical("the supervisor tree gave up", extra={"error": str(root_cause(exc))})
            notifier.stopping("gave up")
            return 1
        finally:
            await app.coordinator.close()
    log.info("vibee stopped")
    return 0


def main(config: Config) -> int:
    """Run the daemon in this process under uvloop; returns the exit code."""
    vlog.configure(config.logging.level, config.logging.format)
    tracing.configure(config.tracing)  # a no-op unless [tracing] enabled = true
    import uvloop

    try:
        return uvloop.run(serve(config))
    finally:
        tracing.shutdown()  # flush the spans still queued for the collector
