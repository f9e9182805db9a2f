"""Connecting Telegram accounts over HTTP, and the user's sessions.

``POST   /api/v1/sessions/connect``        {phone} → 201 {session_id, state: code_sent}
``POST   /api/v1/sessions/{id}/code``      {code} → {state: authorized | password_needed}
``POST   /api/v1/sessions/{id}/password``  {password} → {state: authorized}
``GET    /api/v1/sessions``                → the user's sessions
``GET    /api/v1/sessions/{id}``           → one session (never its credential)
``DELETE /api/v1/sessions/{id}``           → 204, the session and its chats forgotten

Each login step is one :class:`~vibee.telegram.login.LoginFlow` call whose state lives in
Postgres, so the steps may land on different instances. Without a login factory (Telegram
not configured) the login routes answer 503. Login errors carry Telegram's message, in
words a person understands, as ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from vibee.api.errors import ApiError, NotFound, RateLimited, Unavailable
from vibee.api.ratelimit import Limit
from vibee.api.routes.params import Params, id_param, path_id
from vibee.api.routing import Call, Handler, Route, json_response
from vibee.api.schemas_chats import (
    CodeRequest,
    ConnectRequest,
    LoginStarted,
    LoginStep,
    PasswordRequest,
    QrStarted,
    SessionList,
    SessionOut,
)
from vibee.coord.base import CoordinationUnavailable
from vibee.store import Executor, sessions
from vibee.telegram.gateway import GatewayError, LoginError, NetworkError, QrLogin
from vibee.telegram.login import LoginFlow, Step
from vibee.telegram.qr import QrBusy, QrLogins

LoginFlowFactory = Callable[[Executor], LoginFlow]
"""Builds the login flow on the database (the pool of the request)."""

_LOGIN_ERRORS: dict[str, tuple[int, str, str]] = {
    "PHONE_NUMBER_INVALID": (422, "Invalid phone number", "phone-number-invalid"),
    "PHONE_NUMBER_BANNED": (403, "Phone number banned", "phone-number-banned"),
    "PHONE_CODE_INVALID": (422, "Wrong login code", "phone-code-invalid"),
    "PHONE_CODE_EXPIRED": (409, "Login code expired", "phone-code-expired"),
    "PASSWORD_HASH_INVALID": (422, "Wrong two-step password", "password-invalid"),
    "SESSION_PASSWORD_NEEDED": (409, "Two-step password needed", "password-needed"),
    "LOGIN_STEP": (409, "Login step out of order", "login-step"),
}
_LOGIN_STATUSES = (403, 404, 409, 422, 502)


class TelegramError(ApiError):
    """A login step failed: ``title`` says how, ``detail`` is Telegram's message."""

    slug = "telegram-login-failed"
    title = "Telegram login failed"

    def __init__(self, status: int, detail: str, *, title: str, slug: str) -> None:
        """A login failure answered with ``status``."""
        super().__init__(detail, title=title, slug=slug)
        self.status = status


def _problem(exc: GatewayError) -> ApiError:
    """The API error for a gateway error raised by a login step."""
    wait = getattr(exc, "seconds", None)
    if isinstance(wait, int | float) and wait > 0:
        seconds = str(max(1, int(wait)))
        return RateLimited(exc.message, headers={"Retry-After": seconds})
    if isinstance(exc, NetworkError):
        return Unavailable(exc.message, title="Telegram unreachable", slug="telegram-unreachable")
    known = _LOGIN_ERRORS.get(exc.code)
    if known is not None:
        status, title, slug = known
        return TelegramError(status, exc.message, title=title, slug=slug)
    if isinstance(exc, LoginError):
        return TelegramError(422, exc.message, title="Telegram login failed", slug="login-failed")
    return TelegramError(502, exc.message, title="Telegram refused", slug="telegram-error")


def _session_out(row: sessions.SessionRow) -> SessionOut:
    return SessionOut(
        id=row.id,
        phone=row.phone,
        state=row.state,
        state_reason=row.state_reason,
        telegram_user_id=row.telegram_user_id,
        created_at=row.created_at,
    )


def _step(step: Step) -> LoginStep:
    if step.state == "code_sent":  # submit_code/submit_password never answer it
        raise RuntimeError("unexpected login step")
    return LoginStep(
        session_id=step.session_id, state=step.state, telegram_user_id=step.telegram_user_id
    )


def _flow(call: Call, login: LoginFlowFactory | None) -> LoginFlow:
    if login is None:
        raise Unavailable(
            "connect Telegram in the server's configuration first",
            title="Telegram is not configured",
            slug="telegram-not-configured",
        )
    return login(call.ctx.pool())


def login_handlers(login: LoginFlowFactory | None) -> tuple[Handler, Handler, Handler]:
    """The connect, code and password handlers, bound to ``login``."""

    async def connect(call: Call) -> web.Response:
        """Ask Telegram for a login code."""
        flow = _flow(call, login)
        body = call.body_as(ConnectRequest)
        try:
            step = await flow.start(call.user.id, body.phone)
        except GatewayError as exc:
            raise _problem(exc) from None
        return json_response(LoginStarted(session_id=step.session_id), 201)

    async def code(call: Call) -> web.Response:
        """Submit the login code."""
        flow = _flow(call, login)
        session_id = path_id(call, "session")
        body = call.body_as(CodeRequest)
        try:
            step = await flow.submit_code(call.user.id, session_id, body.code)
        except sessions.SessionNotFound:
            raise NotFound(f"no session {session_id}") from None
        except GatewayError as exc:
            raise _problem(exc) from None
        return json_response(_step(step))

    async def password(call: Call) -> web.Response:
        """Submit the two-step verification password."""
        flow = _flow(call, login)
        session_id = path_id(call, "session")
        body = call.body_as(PasswordRequest)
        try:
            step = await flow.submit_password(call.user.id, session_id, body.password)
        except sessions.SessionNotFound:
            raise NotFound(f"no session {session_id}") from None
        except GatewayError as exc:
            raise _problem(exc) from None
        return json_response(_step(step))

    return connect, code, password


QrSource = Callable[[], "QrLogins | None"]


def _qr_out(session_id: int, token: QrLogin) -> QrStarted:
    import io

    import segno

    buffer = io.BytesIO()
    segno.make(token.url).save(buffer, kind="svg", scale=4)
    return QrStarted(
        session_id=session_id,
        qr_url=token.url,
        expires_at=token.expires_at,
        svg=buffer.getvalue().decode(),
    )


def qr_handlers(qr: QrSource) -> tuple[Handler, Handler]:
    """The handlers that start a QR login and show its current code."""

    def logins() -> QrLogins:
        found = qr()
        if found is None:
            raise Unavailable(
                "connect Telegram in the server's configuration first",
                title="Telegram is not configured",
                slug="telegram-not-configured",
            )
        return found

    async def start(call: Call) -> web.Response:
        """Start a QR login: the code to scan, and the session it will become."""
        try:
            session_id, token = await logins().begin(call.user.id)
        except QrBusy as exc:
            raise RateLimited(str(exc), headers={"Retry-After": "10"}) from None
        except GatewayError as exc:
            raise _problem(exc) from None
        return json_response(_qr_out(session_id, token), 201)

    async def current(call: Call) -> web.Response:
        """The code to show now for a pending QR login."""
        session_id = path_id(call, "session")
        try:
            token = await logins().shown(call.user.id, session_id)
        except CoordinationUnavailable:
            raise Unavailable(
                "the QR login may be pending on another server, which cannot be asked now "
                "(Redis does not answer); retry shortly",
                title="Coordination unavailable",
            ) from None
        if token is None:
            raise NotFound(f"no QR login pending for session {session_id}")
        return json_response(_qr_out(session_id, token))

    return start, current


async def list_sessions(call: Call) -> web.Response:
    """The caller's sessions."""
    rows = await sessions.list_for_user(call.ctx.pool(), call.user.id)
    return json_response(SessionList(sessions=[_session_out(r) for r in rows]))


async def get_session(call: Call) -> web.Response:
    """One of the caller's sessions."""
    session_id = path_id(call, "session")
    try:
        row = await sessions.get(call.ctx.pool(), call.user.id, session_id)
    except sessions.SessionNotFound:
        raise NotFound(f"no session {session_id}") from None
    return json_response(_session_out(row))


async def delete_session(call: Call) -> web.Response:
    """Forget one of the caller's sessions and everything stored for it."""
    session_id = path_id(call, "session")
    if not await sessions.delete(call.ctx.pool(), call.user.id, session_id):
        raise NotFound(f"no session {session_id}")
    await call.ctx.notices.sessions_changed()  # its instance disconnects it now
    return web.Response(status=204)


_SESSION_ID = id_param("The session's id.")
PARAMS: Params = {
    ("POST", "/api/v1/sessions/{id}/code"): [_SESSION_ID],
    ("POST", "/api/v1/sessions/{id}/password"): [_SESSION_ID],
    ("GET", "/api/v1/sessions/{id}"): [_SESSION_ID],
    ("GET", "/api/v1/sessions/{id}/qr"): [_SESSION_ID],
    ("DELETE", "/api/v1/sessions/{id}"): [_SESSION_ID],
}


def routes(login: LoginFlowFactory | None, qr: QrSource = lambda: None) -> list[Route]:
    """The session routes; ``login`` None: the login steps answer 503 (``qr`` None: the
    QR routes too)."""
    connect, code, password = login_handlers(login)
    qr_start, qr_current = qr_handlers(qr)
    tag = "sessions"
    api = (Limit.API,)
    return [
        Route(
            "POST",
            "/api/v1/sessions/connect",
            connect,
            "connect_session",
            "Start connecting a Telegram account: Telegram sends a login code to the phone.",
            tag,
            ok=201,
            response=LoginStarted,
            body=ConnectRequest,
            limits=(Limit.API, Limit.AUTH_IP),
            errors=_LOGIN_STATUSES,
        ),
        Route(
            "POST",
            "/api/v1/sessions/{id}/code",
            code,
            "submit_login_code",
            "Submit the login code; answers authorized, or that the 2FA password is needed.",
            tag,
            response=LoginStep,
            body=CodeRequest,
            limits=(Limit.API, Limit.AUTH_IP),
            errors=_LOGIN_STATUSES,
        ),
        Route(
            "POST",
            "/api/v1/sessions/{id}/password",
            password,
            "submit_login_password",
            "Submit the two-step verification password.",
            tag,
            response=LoginStep,
            body=PasswordRequest,
            limits=(Limit.API, Limit.AUTH_IP),
            errors=_LOGIN_STATUSES,
        ),
        Route(
            "POST",
            "/api/v1/sessions/connect/qr",
            qr_start,
            "connect_session_qr",
            "Start connecting a Telegram account by QR code: scan `qr_url` (or the SVG) in "
            "Telegram; then the session becomes authorized, or needs the 2FA password.",
            tag,
            ok=201,
            response=QrStarted,
            limits=(Limit.API, Limit.AUTH_IP),
            errors=_LOGIN_STATUSES,
        ),
        Route(
            "GET",
            "/api/v1/sessions/{id}/qr",
            qr_current,
            "get_session_qr",
            "The QR code to show now for a pending QR login (it is refreshed as it expires).",
            tag,
            response=QrStarted,
            limits=api,
            errors=(404, 503),
        ),
        Route(
            "GET",
            "/api/v1/sessions",
            list_sessions,
            "list_sessions",
            "The user's Telegram accounts.",
            tag,
            response=SessionList,
            limits=api,
        ),
        Route(
            "GET",
            "/api/v1/sessions/{id}",
            get_session,
            "get_session",
            "One Telegram account: its state and why (never its credential).",
            tag,
            response=SessionOut,
            limits=api,
            errors=(404,),
        ),
        Route(
            "DELETE",
            "/api/v1/sessions/{id}",
            delete_session,
            "delete_session",
            "Disconnect a Telegram account and forget everything stored for it.",
            tag,
            ok=204,
            limits=api,
            errors=(404,),
        ),
    ]
