"""Who may open the admin page, and which posts it accepts (without a browser)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from eventfold.adapters.sqlite import create_sqlite_storage
from eventfold.admin import create_admin_app, create_admin_router
from tests.support.network import closed_port

LOCAL = ("http://127.0.0.1", ("127.0.0.1", 50000))
REMOTE = ("http://shop.example", ("203.0.113.9", 50000))


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Any]:
    storage = create_sqlite_storage(str(tmp_path / "admin.db"))
    await storage.create_schema()
    yield storage
    await storage.close()


def client(app: FastAPI, where: tuple[str, tuple[str, int]]) -> httpx.AsyncClient:
    base_url, address = where
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def status(app: FastAPI, where: tuple[str, tuple[str, int]], **headers: str) -> int:
    async with client(app, where) as web:
        return (await web.get("/", headers=headers)).status_code


async def test_without_token_or_auth_it_answers_localhost(storage: Any) -> None:
    assert await status(create_admin_app(storage), LOCAL) == 200


async def test_without_token_or_auth_it_refuses_other_hosts(storage: Any) -> None:
    async with client(create_admin_app(storage), REMOTE) as web:
        response = await web.get("/")
    assert response.status_code == 403
    assert "localhost only" in response.json()["detail"]


async def test_without_token_or_auth_it_refuses_a_request_through_a_proxy(storage: Any) -> None:
    app = create_admin_app(storage)
    assert await status(app, LOCAL, **{"X-Forwarded-For": "203.0.113.9"}) == 403


async def test_with_a_token_a_request_without_it_is_refused(storage: Any) -> None:
    assert await status(create_admin_app(storage, token="s3cret"), REMOTE) == 401


async def test_with_a_token_a_bearer_header_lets_in(storage: Any) -> None:
    app = create_admin_app(storage, token="s3cret")
    assert await status(app, REMOTE, Authorization="Bearer s3cret") == 200


async def test_a_browser_given_the_token_once_keeps_it_in_a_cookie(storage: Any) -> None:
    async with client(create_admin_app(storage, token="s3cret"), REMOTE) as web:
        assert (await web.get("/?token=s3cret")).status_code == 200
        assert (await web.get("/outbox")).status_code == 200


async def test_the_applications_own_auth_dependency_decides(storage: Any) -> None:
    def admins_only(x_role: str | None = Header(None)) -> None:
        if x_role != "admin":
            raise HTTPException(401, "admins only")

    app = FastAPI()
    app.include_router(
        create_admin_router(storage, dependencies=[Depends(admins_only)]), prefix="/ops"
    )
    async with client(app, REMOTE) as web:
        assert (await web.get("/ops/")).status_code == 401
        assert (await web.get("/ops/", headers={"X-Role": "admin"})).status_code == 200


async def csrf_of(web: httpx.AsyncClient, path: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', (await web.get(path)).text)
    assert match is not None
    return match.group(1)


async def test_an_action_with_the_pages_csrf_token_is_done(storage: Any) -> None:
    async with client(create_admin_app(storage), LOCAL) as web:
        token = await csrf_of(web, "/inbox")
        response = await web.post("/inbox/purge", data={"csrf": token, "older_than": "1d"})
    assert response.status_code == 303
    assert "done=forgot" in response.headers["location"]


async def test_an_action_without_the_csrf_token_is_refused(storage: Any) -> None:
    async with client(create_admin_app(storage), LOCAL) as web:
        await csrf_of(web, "/inbox")  # the cookie is set; the form field is missing
        response = await web.post("/inbox/purge", data={"older_than": "1d"})
    assert response.status_code == 403


async def test_an_action_posted_from_another_origin_is_refused(storage: Any) -> None:
    async with client(create_admin_app(storage), LOCAL) as web:
        token = await csrf_of(web, "/inbox")
        response = await web.post(
            "/inbox/purge",
            data={"csrf": token, "older_than": "1d"},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403


async def test_a_bad_duration_comes_back_as_a_message_not_an_error(storage: Any) -> None:
    async with client(create_admin_app(storage), LOCAL) as web:
        token = await csrf_of(web, "/inbox")
        response = await web.post("/inbox/purge", data={"csrf": token, "older_than": "soon"})
    assert response.status_code == 303
    assert "error=" in response.headers["location"]


async def test_an_unknown_stream_is_a_404(storage: Any) -> None:
    async with client(create_admin_app(storage), LOCAL) as web:
        assert (await web.get("/streams/Nope-1")).status_code == 404


async def test_eventfold_admin_serves_the_page_for_a_database(storage: Any, tmp_path: Path) -> None:
    port = closed_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventfold.cli",
        "admin",
        "--database-url",
        f"sqlite:///{tmp_path / 'admin.db'}",
        "--port",
        str(port),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
            async with asyncio.timeout(60):  # waiting for uvicorn to answer
                while True:
                    try:
                        response = await web.get("/outbox")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
        assert response.status_code == 200
        assert "Dead letters" in response.text
    finally:
        server.terminate()
        await server.wait()
