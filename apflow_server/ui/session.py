"""Who is looking at the dashboard, and whether a form really came from it.

Signing in: with JWT on, the viewer pastes a token on /ui/login; it is verified exactly as a
bearer token of JSON-RPC is (api/auth.decode_token) and kept in the `apflow_session` cookie:
HttpOnly (no script reads it), SameSite=Strict (no other site's page makes the browser send
it), Secure behind TLS, and expiring with the token. Every request verifies it again, so an
expired or revoked-by-rotation token sends the viewer back to sign in. With JWT off the
dashboard, like the API, is the local operator's, and the Host check keeps it on loopback.

Forms: every form carries a token, HMAC-SHA256 under the instance key of a random per-browser
value kept in the `apflow_csrf` cookie (HttpOnly, SameSite=Strict) and of the session cookie.
A page of another site can make the browser post a form here, but it can neither read our
pages (no CORS) nor the cookie, so it cannot produce the token; a POST without the right one is
refused with 403 before anything is done. The Origin check (api/browsers.py) refuses such a
POST before that as well: two independent locks.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from apflow_server.api.auth import decode_token
from apflow_server.config import Settings
from apflow_server.core.errors import UnauthenticatedError
from apflow_server.notifications.secret_box import instance_key_of
from apflow_server.service import Principal

SESSION_COOKIE = "apflow_session"
CSRF_COOKIE = "apflow_csrf"
CSRF_FIELD = "csrf_token"
MAX_TOKEN_CHARS = 8192  # a pasted token longer than this is not one of ours


@dataclass(frozen=True)
class Viewer:
    """The signed-in viewer (principal None: the local operator, JWT off)."""

    principal: Principal | None
    auth_on: bool

    @property
    def name(self) -> str:
        if self.principal is None:
            return "local operator"
        return self.principal.subject or "unknown"

    @property
    def is_admin(self) -> bool:
        return self.principal is None or self.principal.is_admin


class SignInRequired(Exception):
    """No valid session: back to the sign-in page, saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def viewer_of(request: Request, settings: Settings) -> Viewer:
    if not settings.jwt_secret:
        return Viewer(None, auth_on=False)
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired("Sign in with a token to see your schedules.")
    try:
        return Viewer(decode_token(token, settings), auth_on=True)
    except UnauthenticatedError as error:
        if "expired" in error.message:
            raise SignInRequired("Your token has expired: sign in with a new one.") from None
        raise SignInRequired("Your session is no longer valid: sign in again.") from None


def check_token(token: str, settings: Settings) -> Principal:
    """A pasted token, verified as JSON-RPC verifies bearer tokens."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise UnauthenticatedError("paste a token (apflow config gen-token makes one)")
    return decode_token(token, settings)


def secure_cookies(request: Request, settings: Settings) -> bool:
    """Whether the browser reaches us over TLS: directly, or through a proxy that terminates
    it at the APFLOW_PUBLIC_URL the deployment declares (uvicorn sees plain http then)."""
    public = settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def sign_in(response: Response, token: str, max_age: int, *, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")


def browser_secret(request: Request) -> str | None:
    value = request.cookies.get(CSRF_COOKIE)
    return value if value and len(value) <= 64 else None


def ensure_browser_secret(request: Request, response: Response, value: str) -> None:
    """Give a browser its random CSRF value when it has none yet."""
    if browser_secret(request) != value:
        services = request.app.state.services
        response.set_cookie(
            CSRF_COOKIE,
            value,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=secure_cookies(request, services.settings),
        )


def new_browser_secret() -> str:
    return secrets.token_urlsafe(24)


@functools.lru_cache(maxsize=8)
def _form_key(secret_key: str | None, home: str) -> bytes:
    settings_key = instance_key_of(secret_key, home)
    return hashlib.sha256(b"apflow dashboard forms\x00" + settings_key.encode()).digest()


def csrf_token(settings: Settings, browser: str, session: str | None) -> str:
    key = _form_key(settings.secret_key, str(settings.home))
    message = f"{browser}\x00{session or ''}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_valid(
    request: Request, settings: Settings, submitted: object, *, with_session: bool = True
) -> bool:
    browser = browser_secret(request)
    if browser is None or not isinstance(submitted, str) or not submitted:
        return False
    bound = request.cookies.get(SESSION_COOKIE) if with_session else None
    expected = csrf_token(settings, browser, bound)
    return hmac.compare_digest(expected.encode(), submitted.encode())
