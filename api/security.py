"""Who may talk to the server: the loopback-only rule, the API token, CORS and the upload cap.

The token travels as `Authorization: Bearer <token>`. `<img>` and `<video>` tags and "open
original" links cannot send that header, so after any request that does carry the right token the
server also sets a cookie that is good for reading an item's bytes only (`GET /api/images/{id}/`
followed by `file`, `thumbnail`, `preview`, `video`, `motion` or `original`, and a face's crop,
`GET /api/faces/{id}/thumbnail`): it holds an HMAC of the token rather than the token itself, is
`HttpOnly` (page scripts never see it), `SameSite=Strict` (another site cannot make the browser send
it, so it cannot embed or probe the images) and scoped to `/api/`, where those reads live; the
server honours it for them alone. Everything else needs the header, so a cross-site form or request
forged against the API gets a 401. Changing API_TOKEN invalidates the cookie with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from http.cookies import SimpleCookie

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import BadRequest
from core.settings import Settings, is_loopback_host

IMAGE_COOKIE = "sightline_images"
COOKIE_PATH = "/api/"  # the browser sends it to the image reads and the face crops (before 2026-12, /api/images/ only)
# the only requests a cookie may authorise: reading an item's bytes, which the page loads by tag
_IMAGE_READ = re.compile(r"^/api/(images/[^/]+/(file|thumbnail|preview|video|motion|original)|faces/[^/]+/thumbnail)$")
# multipart framing around the one file field; the endpoint checks the file itself exactly
UPLOAD_OVERHEAD = 64 * 1024


class UnsafeBindError(BadRequest):
    """Listening beyond this machine without a token would open the photos to the network."""


def check_bind(host: str, settings: Settings) -> None:
    if is_loopback_host(host) or settings.api_token or settings.allow_remote_without_token:
        return
    raise UnsafeBindError(
        f"refusing to listen on {host} without API_TOKEN: anyone who can reach it could see every image. "
        "Set API_TOKEN=<a long random string>, or ALLOW_REMOTE_WITHOUT_TOKEN=1 if something else "
        "(a firewall, a proxy with its own login) already guards access."
    )


def image_cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"sightline image reads", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _cookie(headers: Headers, name: str) -> str | None:
    cookies: SimpleCookie = SimpleCookie()
    for raw in headers.getlist("cookie"):
        try:
            cookies.load(raw)
        except Exception:  # a malformed Cookie header just means no cookie
            continue
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


async def _json_error(send: Send, status: int, detail: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def needs_token(path: str) -> bool:
    """Every API route. The page, its scripts and /docs stay open so that the page can ask for the
    token; they hold no data."""
    return path == "/api" or path.startswith("/api/")


class TokenAuth:
    """Pure ASGI, so that it also guards streamed responses and never buffers bodies."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.cookie = image_cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_token(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.token):
            if _cookie(headers, IMAGE_COOKIE) != self.cookie:
                send = self._setting_cookie(send)
            await self.app(scope, receive, send)
            return
        cookie = _cookie(headers, IMAGE_COOKIE)
        if (
            cookie is not None
            and scope["method"] in ("GET", "HEAD")
            and _IMAGE_READ.match(scope["path"])
            and _same(cookie, self.cookie)
        ):
            await self.app(scope, receive, send)
            return
        detail = (
            "The access token is wrong; send the server's API_TOKEN as 'Authorization: Bearer <token>'."
            if given
            else "This server needs an access token: send 'Authorization: Bearer <API_TOKEN>'."
        )
        await _json_error(send, 401, detail, [(b"www-authenticate", b'Bearer realm="sightline"')])

    def _setting_cookie(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(
                    "set-cookie", f"{IMAGE_COOKIE}={self.cookie}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict"
                )
            await send(message)

        return wrapped


class UploadLimit:
    """Refuse an oversized upload before it is read. Without this the multipart parser would spool
    the whole body to a temporary file before the endpoint could look at its size."""

    def __init__(self, app: ASGIApp, path: str, max_bytes: int) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes
        self.limit = max_bytes + UPLOAD_OVERHEAD

    def _detail(self) -> str:
        return f"The upload is larger than {self.max_bytes // (1024 * 1024)} MB (UPLOAD_MAX_MB)."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            # "connection: close": the unread body must not be taken for the next request
            await _json_error(send, 413, self._detail(), [(b"connection", b"close")])
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # a chunked body, which declares no length
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting, send)
