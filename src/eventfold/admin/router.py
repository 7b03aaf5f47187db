"""The admin page's FastAPI router: server-rendered pages, actions as CSRF-checked POSTs."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from eventfold.admin.data import AdminData, StreamFilter
from eventfold.application.messaging.sagas import SagaOrchestrator
from eventfold.application.readside.health import retry_projection, skip_parked_event
from eventfold.application.readside.projections import Projection, ProjectionRunner
from eventfold.errors import EventfoldError
from eventfold.ports import Storage
from eventfold.serialization import EventRegistry

__all__ = ["create_admin_router"]

CSRF_COOKIE = "eventfold_admin_csrf"
TOKEN_COOKIE = "eventfold_admin_token"  # noqa: S105 - a cookie name, not a secret
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def create_admin_router(
    storage: Storage,
    *,
    events: EventRegistry | None = None,
    projections: Sequence[Projection] = (),
    sagas: SagaOrchestrator | None = None,
    token: str | None = None,
    dependencies: Sequence[DependsParam] = (),
) -> APIRouter:
    """The admin page over ``storage``; mount it with ``app.include_router(router, prefix=...)``.

    Off unless mounted. Who may use it: with ``dependencies`` (the application's own auth,
    e.g. ``[Depends(require_admin)]``) whoever they let through; else with ``token``
    whoever sends it (``Authorization: Bearer ...``, or ``?token=...`` once in a browser,
    kept in a cookie); else only requests to and from localhost. ``events`` lets the page
    redact the fields event classes mark personal (sealed values are always redacted),
    ``projections`` enables rebuilds, ``sagas`` retries of sagas it knows.
    """
    admin = _Admin(storage, events, projections, sagas)
    guard = _Guard(token, trust_dependencies=bool(dependencies))
    router = APIRouter(dependencies=[Depends(guard), *dependencies], include_in_schema=False)
    admin.route(router)
    return router


class _Guard:
    """Lets a request in by the application's auth, the token, or localhost only."""

    def __init__(self, token: str | None, *, trust_dependencies: bool) -> None:
        self._token = token
        self._trust_dependencies = trust_dependencies

    async def __call__(self, request: Request) -> None:
        if self._trust_dependencies:
            return
        if self._token is not None:
            if not any(hmac.compare_digest(given, self._token) for given in _tokens(request)):
                raise HTTPException(401, "the admin page needs its token")
            return
        if not _local(request):
            raise HTTPException(
                403,
                "the admin page answers on localhost only unless it is given a token or "
                "the application's auth dependencies",
            )


def _tokens(request: Request) -> list[str]:
    found = [request.cookies.get(TOKEN_COOKIE, ""), request.query_params.get("token", "")]
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        found.append(value)
    return [token for token in found if token]


def _local(request: Request) -> bool:
    # A proxy in front makes every client look local: forwarded requests are not trusted.
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    server = request.scope.get("server")
    client = request.client
    hosts = [client.host if client else "", server[0] if server else ""]
    return all(_loopback(host) for host in hosts)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


class _Admin:
    """The pages and the actions."""

    def __init__(
        self,
        storage: Storage,
        events: EventRegistry | None,
        projections: Sequence[Projection],
        sagas: SagaOrchestrator | None,
    ) -> None:
        self.data = AdminData(storage, events)
        self.storage = storage
        self.events = events
        self.projections = list(projections)
        self.sagas = sagas or SagaOrchestrator(storage, [])
        self.templates = Environment(
            loader=PackageLoader("eventfold.admin", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["pretty"] = _pretty

    def route(self, router: APIRouter) -> None:
        pages: list[tuple[str, str, Callable[..., Awaitable[Response]]]] = [
            ("/", "admin_overview", self.overview),
            ("/streams", "admin_streams", self.streams),
            ("/streams/{stream_id:path}", "admin_stream", self.stream),
            ("/projections", "admin_projections", self.projections_page),
            ("/outbox", "admin_outbox", self.outbox),
            ("/inbox", "admin_inbox", self.inbox),
            ("/sagas", "admin_sagas", self.saga_list),
            ("/sagas/{saga_id:path}", "admin_saga", self.saga),
        ]
        for path, name, page in pages:
            router.add_api_route(path, page, methods=["GET"], name=name)
        actions: list[tuple[str, Callable[..., Awaitable[str]], str]] = [
            ("/projections/{name}/rebuild", self.rebuild, "/projections"),
            ("/projections/{name}/retry", self.retry_projection, "/projections"),
            ("/projections/{name}/skip", self.skip_event, "/projections"),
            ("/outbox/requeue", self.requeue, "/outbox"),
            ("/outbox/delete", self.delete_dead, "/outbox"),
            ("/outbox/purge", self.purge_outbox, "/outbox"),
            ("/inbox/purge", self.purge_inbox, "/inbox"),
            ("/sagas/{saga_id}/retry", self.retry_saga, "/sagas"),
            ("/sagas/{saga_id}/resolve", self.resolve_saga, "/sagas"),
        ]
        for path, action, back in actions:
            router.add_api_route(path, self._post(action, back), methods=["POST"])

    # -- rendering ---------------------------------------------------------------------

    def render(self, request: Request, template: str, page: str, **values: Any) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = self.templates.get_template(template).render(
            root=_root(request),
            page=page,
            csrf=csrf,
            storage=self.storage.name,
            flash=request.query_params.get("done") or request.query_params.get("error"),
            flash_kind="bad" if "error" in request.query_params else "ok",
            **values,
        )
        response = HTMLResponse(html)
        cookie = {"httponly": True, "samesite": "strict", "path": "/"}
        response.set_cookie(CSRF_COOKIE, csrf, **cookie)  # type: ignore[arg-type]
        token = request.query_params.get("token")
        if token:  # a browser given the token once keeps it for the session
            response.set_cookie(TOKEN_COOKIE, token, **cookie)  # type: ignore[arg-type]
        return response

    def _post(self, action: Callable[..., Awaitable[str]], back: str) -> Callable[..., Any]:
        async def post(request: Request) -> Response:
            form = await _checked_form(request)
            target = back
            try:
                message = await action(form=form, **request.path_params)
                query = f"done={quote(message)}"
            except (EventfoldError, ValueError) as exc:  # the operator's mistake: say it
                query = f"error={quote(str(exc))}"
            if back == "/sagas" and "saga_id" in request.path_params:
                target = f"/sagas/{quote(request.path_params['saga_id'])}"
            return RedirectResponse(f"{_root(request)}{target}?{query}", status_code=303)

        return post

    # -- pages -------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", "Overview", o=await self.data.overview())

    async def streams(
        self,
        request: Request,
        q: str = "",
        type: str = "",  # noqa: A002 - the query parameter's name
        since: str = "",
        until: str = "",
    ) -> Response:
        search = StreamFilter(q.strip(), type, _moment(since), _moment(until))
        return self.render(
            request,
            "streams.html",
            "Streams",
            search=search,
            since=since,
            until=until,
            types=await self.data.event_types(),
            streams=await self.data.streams(search),
        )

    async def stream(self, request: Request, stream_id: str) -> Response:
        found = await self.data.stream(stream_id)
        if not found:
            raise HTTPException(404, f"no stream {stream_id!r}")
        return self.render(request, "stream.html", "Streams", stream_id=stream_id, events=found)

    async def projections_page(self, request: Request) -> Response:
        return self.render(
            request,
            "projections.html",
            "Projections",
            projections=await self.data.projections(),
            rebuildable={p.name for p in self.projections} if self.events else set(),
        )

    async def outbox(self, request: Request) -> Response:
        stats = await self.data.outbox.outbox_stats()
        oldest = stats.oldest_unpublished_at
        age = "-" if oldest is None else f"{(datetime.now(UTC) - oldest).total_seconds():.0f}s"
        dead = await self.data.outbox.read_dead(limit=200)
        return self.render(request, "outbox.html", "Outbox", stats=stats, oldest=age, dead=dead)

    async def inbox(self, request: Request) -> Response:
        return self.render(request, "inbox.html", "Inbox", handlers=await self.data.inbox())

    async def saga_list(self, request: Request) -> Response:
        return self.render(request, "sagas.html", "Sagas", sagas=await self.data.sagas())

    async def saga(self, request: Request, saga_id: str) -> Response:
        state = await self.sagas.get(saga_id)
        if state is None:
            raise HTTPException(404, f"no saga {saga_id!r}")
        return self.render(request, "saga.html", "Sagas", state=state)

    # -- actions: each returns what it did, in one line --------------------------------

    async def rebuild(self, *, form: dict[str, str], name: str) -> str:
        if self.events is None or name not in {p.name for p in self.projections}:
            msg = f"this admin page cannot rebuild {name!r}: it was not given that projection"
            raise ValueError(msg)
        runner = ProjectionRunner(self.storage, self.events, self.projections)
        done = await runner.rebuild(name)
        return f"rebuilt {name}: {done} events replayed"

    async def retry_projection(self, *, form: dict[str, str], name: str) -> str:
        parked = await retry_projection(self.storage, name)
        return f"{name} will apply {parked.type_name} {parked.event_id} again"

    async def skip_event(self, *, form: dict[str, str], name: str) -> str:
        event_id = UUID(form["event_id"]) if form.get("event_id") else None
        skipped = await skip_parked_event(
            self.storage,
            name,
            reason=form.get("reason", ""),
            now=datetime.now(UTC),
            event_id=event_id,
        )
        return f"{name} skips {skipped.type_name} {skipped.event_id}"

    async def requeue(self, *, form: dict[str, str]) -> str:
        ids = None if form.get("all") else [int(form["id"])]
        count = await self.data.outbox.requeue(ids)
        return f"requeued {count} row(s)"

    async def delete_dead(self, *, form: dict[str, str]) -> str:
        count = await self.data.delete_dead(int(form["id"]))
        return f"purged {count} dead row(s)"

    async def purge_outbox(self, *, form: dict[str, str]) -> str:
        cutoff = datetime.now(UTC) - _duration(form.get("older_than", ""))
        count = await self.data.outbox.purge_published(cutoff)
        return f"purged {count} published row(s)"

    async def purge_inbox(self, *, form: dict[str, str]) -> str:
        cutoff = datetime.now(UTC) - _duration(form.get("older_than", ""))
        count = await self.data.purge_inbox(cutoff)
        return f"forgot {count} inbox entr{'y' if count == 1 else 'ies'}"

    async def retry_saga(self, *, form: dict[str, str], saga_id: str) -> str:
        state = await self.sagas.retry(saga_id)
        return f"retried {saga_id}: now {state.status}"

    async def resolve_saga(self, *, form: dict[str, str], saga_id: str) -> str:
        note = form.get("note", "").strip()
        if not note:
            msg = "say what was put right: the note stays in the saga's history"
            raise ValueError(msg)
        await self.sagas.resolve(saga_id, note=note)
        return f"resolved {saga_id}"


async def _checked_form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token matches the cookie and its origin is ours."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "a form posted from another site")
    body = (await request.body()).decode()
    form = {key: values[-1] for key, values in parse_qs(body).items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(form.get("csrf", ""), cookie):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page")
    return form


def _root(request: Request) -> str:
    return request.url_for("admin_overview").path.rstrip("/")


def _moment(text: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"{text!r} is not a date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(text: str) -> timedelta:
    compact = text.strip().lower()
    number, unit = compact[:-1], compact[-1:]
    if not number.isdigit() or unit not in _DURATION_UNITS:
        msg = f"{text!r} is not a duration such as 30m, 12h, 7d"
        raise ValueError(msg)
    return timedelta(seconds=int(number) * _DURATION_UNITS[unit])


def _when(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return "" if value is None else str(value)


def _pretty(value: object) -> str:
    if dataclass_fields := getattr(value, "__dataclass_fields__", None):
        value = {name: getattr(value, name) for name in dataclass_fields}
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
