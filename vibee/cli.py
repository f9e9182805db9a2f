"""The ``vibee`` command: one function per subcommand.

A user mistake ends in one line on stderr and a non-zero exit code, never a traceback:
exit 2 for an invalid configuration or command line, exit 1 for anything else that failed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from vibee import __version__
from vibee.config import Config, ConfigError, load_config
from vibee.secrets import SecretError, SecretStore
from vibee.store import ID_MAX, users
from vibee.store.db import Database, DatabaseError, redact_url
from vibee.store.migrate import MigrationError, Migrator
from vibee.telegram.factory import TelegramNotConfigured
from vibee.telegram.gateway import GatewayError

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _from_1(out_of_range: str) -> Callable[[str], int]:
    """An argparse type: an integer from 1 to :data:`ID_MAX`; ``out_of_range`` is the
    error for others (``{text}``: what was given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 1 <= value <= ID_MAX:
            raise argparse.ArgumentTypeError(out_of_range.format(text=text))
        return value

    return parse


_row_id = _from_1(f"no such id: {{text}} (ids are 1 to {ID_MAX})")
_count = _from_1("must be at least 1, not {text}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise CliError(f"{self.prog}: {message}", code=2)


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise CliError("\n".join(exc.problems), code=2) from None


def _database(config: Config) -> Database:
    store = SecretStore(config, config.state_dir())
    password = store.get("database_password")
    return Database(config.database, config.state_dir(), password.value if password else None)


def _run_async(main: Callable[[], Awaitable[T]]) -> T:
    async def wrapped() -> T:
        return await main()

    return asyncio.run(wrapped())


async def _with_connection(config: Config, work: Callable[[Any], Awaitable[T]]) -> T:
    db = _database(config)
    try:
        conn = await db.connect()
        try:
            return await work(conn)
        except asyncpg.UndefinedTableError:
            raise CliError(
                "the database has no VIBEE tables yet: run `vibee migrate up` first"
            ) from None
        finally:
            await conn.close()
    finally:
        await db.close()


# --- vibee config check -------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _render(table: dict[str, Any], prefix: str = "") -> list[str]:
    lines: list[str] = []
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"\n[{prefix}]")
    for key, value in scalars.items():
        lines.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        lines.extend(_render(value, f"{prefix}.{key}" if prefix else key))
    return lines


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the configuration and print it with every secret shown as ``***``."""
    config = _load(args)
    store = SecretStore(config, config.state_dir())
    problems = []
    effective = config.model_dump(mode="json")
    for section in ("database", "redis"):  # a password written into a URL stays hidden
        effective[section]["url"] = redact_url(effective[section]["url"])
    lines = _render(effective)
    lines.append("\n# secrets (values never shown)")
    for name in store.names:
        try:
            secret = store.get(name)
        except SecretError as exc:
            problems.append(str(exc))
            continue
        shown = f"*** ({secret.source})" if secret else "(not set)"
        lines.append(f"# {name} = {shown}")
    if problems:
        raise CliError("\n".join(problems), code=2)
    print("\n".join(lines).lstrip("\n"))
    return 0


# --- vibee migrate --------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply, roll back or show migrations on the configured (or embedded) database."""
    config = _load(args)

    async def work(conn: Any) -> int:
        migrator = Migrator(conn)
        if args.action == "up":
            ran = await migrator.up()
            for m in ran:
                print(f"applied  {m.filename}")
            if not ran:
                print("up to date")
        elif args.action == "down":
            for m in await migrator.down(args.steps):
                print(f"reverted {m.filename}")
        else:
            status = await migrator.status()
            for row in status.applied:
                print(f"applied  {row.version:04d}_{row.name}.sql  {row.applied_at:%Y-%m-%d %H:%M}")
            for m in status.pending:
                print(f"pending  {m.filename}")
        return 0

    return _run_async(lambda: _with_connection(config, work))


# --- vibee user -----------------------------------------------------------------------------


def _read_password(prompt: str) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat: ") != first:
            raise CliError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def cmd_user(args: argparse.Namespace) -> int:
    """Create, list or disable VIBEE users."""
    config = _load(args)
    password = _read_password(f"Password for {args.name}: ") if args.action == "create" else ""

    async def work(conn: Any) -> int:
        if args.action == "create":
            user = await users.create(conn, args.name, password)
            print(f"created user {user.username} (id {user.id})")
        elif args.action == "disable":
            user = await users.set_disabled(conn, args.name, True)
            print(f"disabled user {user.username}")
        elif args.action == "set-tier":
            from vibee.api.app import settings_from_config

            tiers = settings_from_config(config).tiers
            if args.tier not in tiers:
                known = ", ".join(tiers.names)
                raise CliError(f"unknown tier {args.tier!r}; configured: {known}")
            user = await users.set_tier(conn, args.name, args.tier)
            print(f"user {user.username} is now on tier {user.subscription_tier}")
        else:
            for user in await users.list_all(conn):
                state = "disabled" if user.disabled else "active"
                print(f"{user.id}\t{user.username}\t{user.subscription_tier}\t{state}")
        return 0

    return _run_async(lambda: _with_connection(config, work))


# --- vibee run ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    from vibee import app

    return app.main(_load(args))


# --- vibee ai ask --------------------------------------------------------------------------


def cmd_ai_ask(args: argparse.Namespace) -> int:
    """Send one prompt through the configured chain and say who answered and how."""
    import time

    from vibee.ai.base import ChatRequest, Completion, Delta, Message
    from vibee.ai.router import Refusal
    from vibee.ai.service import build_router

    config = _load(args)
    store = SecretStore(config, config.state_dir())
    request = ChatRequest(
        messages=(Message("user", args.text),), system=args.system, max_tokens=config.ai.max_tokens
    )

    async def ask() -> int:
        router, skipped = build_router(config, store)
        started = time.monotonic()
        answer: Completion | Refusal | None = None
        try:
            if args.stream:
                async for item in router.stream(request):
                    if isinstance(item, Delta):
                        print(item.text, end="", flush=True)
                    else:
                        answer = item
                print()
            else:
                answer = await router.complete(request)
        finally:
            await router.close()
        elapsed_ms = (time.monotonic() - started) * 1000
        for gone in skipped:
            print(f"skipped   {gone.name}: {gone.reason}")
        assert answer is not None
        for fallback in answer.fallbacks:
            print(f"fell back {fallback}")
        if isinstance(answer, Refusal):
            raise CliError(f"no answer: {answer.reason}: {answer.detail}")
        if not args.stream:
            print(answer.text)
        marks = [m for m in ("canned", "partial", "cached") if getattr(answer, m)]
        marked = f" [{', '.join(marks)}]" if marks else ""
        usage = answer.usage
        estimated = " (estimated)" if usage.estimated else ""
        print(
            f"answered by {answer.provider} ({answer.model}){marked} in {elapsed_ms:.0f} ms; "
            f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
            f"{estimated}"
        )
        return 0

    return _run_async(ask)


# --- vibee login ----------------------------------------------------------------------------


def _ask(prompt: str, secret: bool = False) -> str:
    if sys.stdin.isatty():
        return (getpass.getpass(prompt) if secret else input(prompt)).strip()
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise CliError("login: input ended before the login finished")
    print()
    return line.strip()


def cmd_login(args: argparse.Namespace) -> int:
    """Connect a Telegram account to a VIBEE user, in the terminal."""
    from vibee.app import prepare_state
    from vibee.telegram.factory import gateway_factory
    from vibee.telegram.gateway import LoginError, PasswordInvalid, PhoneCodeInvalid, QrLogin
    from vibee.telegram.login import LoginFlow

    config = _load(args)
    _, store = prepare_state(config)
    keyring = store.keyring("session_keys")
    connection: list[Any] = []
    gateways = gateway_factory(config, store, lambda: connection[0])

    def show(token: QrLogin) -> None:
        import segno

        print("Scan this code in Telegram (Settings > Devices > Link Desktop Device):")
        segno.make(token.url).terminal(compact=True)
        print(f"{token.url}\n(valid until {token.expires_at:%H:%M:%S})", flush=True)

    async def password() -> str:
        return _ask("Two-step verification password: ", secret=True)

    async def work(conn: Any) -> int:
        connection.append(conn)
        user = await users.get_by_name(conn, args.user)
        flow = LoginFlow(conn, keyring, gateways)
        if args.qr:
            step = await flow.qr(user.id, show, password)
        else:
            phone = args.phone or _ask("Phone number (international format): ")
            step = await flow.start(user.id, phone)
            print(f"A code was sent to {phone} (in the Telegram app or by SMS).")
            while step.state == "code_sent":
                try:
                    step = await flow.submit_code(user.id, step.session_id, _ask("Code: "))
                except PhoneCodeInvalid as exc:
                    print(exc.message)
            while step.state == "password_needed":
                try:
                    step = await flow.submit_password(user.id, step.session_id, await password())
                except PasswordInvalid as exc:
                    print(exc.message)
        print(f"connected: session {step.session_id} (Telegram user {step.telegram_user_id})")
        return 0

    try:
        return _run_async(lambda: _with_connection(config, work))
    except LoginError as exc:
        raise CliError(f"login failed: {exc.message}") from None


# --- vibee history import ----------------------------------------------------------------------


def cmd_history_import(args: argparse.Namespace) -> int:
    """Import an account's past messages (resumable), so the twin learns how the owner writes."""
    from vibee.ai.service import build_embeddings
    from vibee.app import prepare_state
    from vibee.automation.history import HistoryImport
    from vibee.automation.rag import Rag
    from vibee.store import sessions
    from vibee.telegram.factory import gateway_factory
    from vibee.telegram.session_actor import LIVE
    from vibee.telegram.session_store import unseal

    config = _load(args)
    _, store = prepare_state(config)
    connection: list[Any] = []
    gateways = gateway_factory(config, store, lambda: connection[0])

    def progress(done: int, total: int, messages: int) -> None:
        width = 30
        filled = width * done // total if total else width
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r[{bar}] chats {done}/{total}, {messages} messages", end="", file=sys.stderr)

    async def work(conn: Any) -> int:
        connection.append(conn)
        row = await sessions.get_any_user(conn, args.session)
        if row.state in LIVE:
            raise CliError(
                f"session {row.id} is connected by a running VIBEE: stop it first (two "
                "connections on one Telegram session make Telegram destroy it; a VIBEE that "
                "was killed leaves the session marked connected until it runs again)"
            )
        if row.credential is None:
            raise CliError(f"session {row.id} is not logged in")
        gateway = gateways(row.id, unseal(store.keyring("session_keys"), row.id, row.credential))
        embedder = build_embeddings(config, store)
        rag = Rag(embedder, conn) if embedder is not None else None
        try:
            await gateway.connect()
            importer = HistoryImport(conn, gateway, row.user_id, row.id, rag=rag)
            result = await importer.run(limit=args.limit, progress=progress)
        finally:
            await gateway.disconnect()
            if embedder is not None:
                await embedder.close()
        print(file=sys.stderr)
        print(
            f"imported {result.messages} messages from {result.chats} chats"
            f"; {result.indexed} embedded for the twin"
        )
        return 0

    return _run_async(lambda: _with_connection(config, work))


# --- vibee keys rotate -----------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Add a new primary key to each keyring VIBEE can write, then re-encrypt every stored
    Telegram credential with the session keyring's primary key (safe while VIBEE runs)."""
    from vibee.telegram.session_store import reseal_all

    config = _load(args)
    store = SecretStore(config, config.state_dir())
    for name in ("session_keys", "jwt_keys"):
        added = store.add_key(name) if not args.no_new_key else None
        if added:
            print(f"{name}: new primary key {added}")
        else:
            print(f"{name}: primary key {store.keyring(name).primary_id} (not changed here)")
    keyring = store.keyring("session_keys")

    async def work(conn: Any) -> int:
        report = await reseal_all(conn, keyring)
        print(f"re-encrypted {report.rotated} credentials; {report.current} already current")
        if report.unreadable:
            ids = ", ".join(str(i) for i in report.unreadable)
            raise CliError(f"cannot decrypt the credentials of sessions {ids}: a key is missing")
        return 0

    code = _run_async(lambda: _with_connection(config, work))
    print("restart VIBEE (or every instance) so that new credentials use the new key")
    return code


# --- vibee dlq -------------------------------------------------------------------------------


def cmd_dlq(args: argparse.Namespace) -> int:
    """List, replay or drop dead letters (replies VIBEE gave up sending)."""
    from vibee.store import automation

    config = _load(args)

    async def work(conn: Any) -> int:
        if args.action == "list":
            letters = await automation.dead_letters_all_users(conn, args.limit)
            for letter in letters:
                text = letter.text.replace("\n", " ")[:60]
                print(
                    f"{letter.id}\tuser {letter.user_id}\tsession {letter.session_id}\t"
                    f"{letter.attempts} attempts\t{letter.error}\t{text}"
                )
            if not letters:
                print("no dead letters")
            return 0
        act = (
            automation.replay_dead_letter
            if args.action == "replay"
            else automation.drop_dead_letter
        )
        done = 0
        for letter_id in args.ids:
            if await act(conn, letter_id):
                done += 1
            else:
                print(f"no dead letter {letter_id}", file=sys.stderr)
        verb = "replayed (back in the outbox)" if args.action == "replay" else "dropped"
        print(f"{verb}: {done}")
        return 0 if done == len(args.ids) else 1

    return _run_async(lambda: _with_connection(config, work))


# --- vibee demo ------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Everything on this machine: simulators, the daemon, a scripted conversation."""
    from vibee import demo

    return demo.main()


# --- vibee sim ---------------------------------------------------------------------------


SIMULATORS = ("llm", "telegram")


def cmd_sim(simulator: str, rest: Sequence[str]) -> int:
    """Run a simulator in the foreground; its own options follow the subcommand."""
    import importlib

    module = importlib.import_module(f"vibee.sim.{simulator}")
    code: int = module.main(list(rest))
    return code


# --- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="config file (default: ./config.toml, then /etc/vibee/config.toml)",
    )
    parser = _Parser(prog="vibee", description="Telegram accounts under AI automation.")
    parser.add_argument("--version", action="version", version=f"vibee {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("run", parents=[common], help="run the daemon").set_defaults(func=cmd_run)
    sub.add_parser(
        "demo", help="VIBEE end to end on simulators: no credentials, no network"
    ).set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    config.add_parser(
        "check", parents=[common], help="validate and print the effective configuration"
    ).set_defaults(func=cmd_config_check)

    migrate = sub.add_parser("migrate", help="database schema").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    migrate.add_parser("up", parents=[common], help="apply pending migrations")
    down = migrate.add_parser("down", parents=[common], help="roll back the last N migrations")
    down.add_argument("steps", type=int, nargs="?", default=1, metavar="N")
    migrate.add_parser("status", parents=[common], help="applied and pending migrations")
    for name in ("up", "down", "status"):
        migrate.choices[name].set_defaults(func=cmd_migrate)

    user = sub.add_parser("user", help="VIBEE users").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    create = user.add_parser("create", parents=[common], help="create a user (password: stdin)")
    create.add_argument("name")
    disable = user.add_parser("disable", parents=[common], help="disable a user")
    disable.add_argument("name")
    user.add_parser("list", parents=[common], help="list users")
    tier = user.add_parser("set-tier", parents=[common], help="change a user's subscription tier")
    tier.add_argument("name")
    tier.add_argument("tier")
    for name in ("create", "disable", "list", "set-tier"):
        user.choices[name].set_defaults(func=cmd_user)

    ai = sub.add_parser("ai", help="the AI chain").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    ask = ai.add_parser("ask", parents=[common], help="one prompt through the configured chain")
    ask.add_argument("text")
    ask.add_argument("--stream", action="store_true", help="print the answer as it is written")
    ask.add_argument("--system", default="", help="a system prompt")
    ask.set_defaults(func=cmd_ai_ask)

    login = sub.add_parser(
        "login", parents=[common], help="connect a Telegram account to a user (interactive)"
    )
    login.add_argument("--user", required=True, help="the VIBEE user that owns the account")
    login.add_argument("--phone", help="the phone number (asked for when not given)")
    login.add_argument("--qr", action="store_true", help="log in by scanning a QR code")
    login.set_defaults(func=cmd_login)

    dlq = sub.add_parser("dlq", help="dead letters: replies VIBEE gave up on").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    listing = dlq.add_parser("list", parents=[common], help="the newest dead letters")
    listing.add_argument("--limit", type=_count, default=100)
    for name, text in (("replay", "put back in the outbox"), ("drop", "forget")):
        action = dlq.add_parser(name, parents=[common], help=text)
        action.add_argument("ids", type=_row_id, nargs="+", metavar="ID")
    for name in ("list", "replay", "drop"):
        dlq.choices[name].set_defaults(func=cmd_dlq)

    history = sub.add_parser("history", help="past messages").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    imp = history.add_parser(
        "import", parents=[common], help="import a session's past messages (resumable)"
    )
    imp.add_argument("--session", type=_row_id, required=True, metavar="ID")
    imp.add_argument("--limit", type=_count, default=None, help="messages per chat at most")
    imp.set_defaults(func=cmd_history_import)

    keys = sub.add_parser("keys", help="keyrings").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    rotate = keys.add_parser(
        "rotate", parents=[common], help="new primary keys; re-encrypt stored credentials"
    )
    rotate.add_argument(
        "--no-new-key",
        action="store_true",
        help="only re-encrypt with the current primary key (you rotated the keyring yourself)",
    )
    rotate.set_defaults(func=cmd_keys_rotate)

    sim = sub.add_parser("sim", help="simulators for tests and demos").add_subparsers(
        dest="simulator", required=True, parser_class=_Parser
    )
    # `vibee sim NAME ...` is dispatched by main() before parsing: these are for --help
    sim.add_parser("llm", help="fake LLM providers (OpenAI, OpenRouter, Anthropic)")
    sim.add_parser("telegram", help="the simulated Telegram network (see docs/sim.md)")
    return parser


_EXPECTED = (
    CliError,
    TelegramNotConfigured,
    LookupError,
    GatewayError,
    ConfigError,
    SecretError,
    DatabaseError,
    MigrationError,
    users.UserError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vibee`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) >= 2 and argv[0] == "sim" and argv[1] in SIMULATORS:
            return cmd_sim(argv[1], argv[2:])
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code
    except CliError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except _EXPECTED as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vibee: interrupted", file=sys.stderr)
        return 130
