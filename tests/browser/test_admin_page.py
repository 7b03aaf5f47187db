"""The admin page in a real headless Chromium, against the example shop served by uvicorn.

Each page is opened and photographed (into ``EVENTFOLD_ADMIN_SCREENSHOTS`` when set, as
``docs/admin/*.png`` are made); each action is clicked and the database is checked.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from examples.shop.demo import run_demo
from playwright.sync_api import sync_playwright
from rich.console import Console

from eventfold.adapters.url import storage_from_url
from eventfold.admin.data import AdminData, outbox_store_for
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.sagas import Saga, SagaOrchestrator, SagaStatus
from eventfold.application.readside.health import (
    ParkedFailure,
    park_projection,
    projection_health,
)
from eventfold.application.readside.projections import projection_lag
from eventfold.ports import LOG_START, EventRecord
from eventfold.testing.sagas import StepRecorder
from tests.support.network import closed_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOW = datetime.now(UTC)


@dataclass
class Checkout:
    order_id: str


@dataclass
class Seeded:
    url: str
    dead: list[int]
    saga_id: str
    sealed_stream: str


def seed(url: str) -> Seeded:
    """The shop's scripted day, plus one of everything an operator looks after."""
    asyncio.run(run_demo(url, console=Console(file=io.StringIO())))
    return asyncio.run(_seed(url))


async def _seed(url: str) -> Seeded:
    storage = storage_from_url(url)
    try:
        store = outbox_store_for(storage)
        async with store.claim(limit=2, now=NOW + timedelta(seconds=1)) as claim:
            dead = [entry.id for entry in claim.entries]
            for entry_id in dead:
                await claim.record_failure(
                    entry_id, error="broker refused: no route", next_attempt_at=NOW, dead=True,
                    refused=True,
                )  # fmt: skip
        async with storage.transaction() as session:
            first, second = await session.read_log(after=LOG_START, limit=2)
            await session.mark_processed(uuid4(), "mailer")
            await session.mark_processed(uuid4(), "mailer")
            sealed = "Customer-c-sealed"
            record = EventRecord(
                uuid4(),
                "shop.ProfileRecorded",
                1,
                json.dumps({"customer_id": "c-sealed", "email": "pd1:c2VhbGVk"}),
                NOW,
            )
            await session.append(sealed, [record], expected_version=0)
        for name, event in (("order-summaries", first), ("audit-log", second)):
            failure = ParkedFailure.of(event, KeyError("no column 'total'"), NOW)
            await park_projection(storage, name, failure)
        recorder = StepRecorder()
        steps = [recorder.step("reserve", undo_fail=9), recorder.step("charge", fail=9)]
        retry = RetryPolicy(max_attempts=1, initial=0, maximum=0, jitter=0)
        saga = Saga("checkout", Checkout, steps, retry=retry)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Checkout("o-1"))
        assert state.status is SagaStatus.NEEDS_INTERVENTION
        return Seeded(url, dead, state.saga_id, sealed)
    finally:
        await storage.close()


def wait_until_serving(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/admin/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)  # polling a server that is starting
    raise AssertionError("waited 60 s for the shop's admin page to answer")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded]]:
    """The example shop, seeded, served by uvicorn on a free local port."""
    home = tmp_path_factory.mktemp("admin")
    seeded = seed(f"sqlite:///{home / 'shop.db'}")
    port = closed_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.shop.api:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "EVENTFOLD_DATABASE_URL": seeded.url},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, server)
        yield base, seeded
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the "are you sure?" prompts
    yield opened
    context.close()


def photograph(page: Any, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("EVENTFOLD_ADMIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def flash(page: Any) -> str:
    return str(page.locator("[role=status]").inner_text())


async def order_events(storage: Any) -> int:
    """How many events of an order's stream the log holds."""
    async with storage.transaction() as session:
        events = await session.read_log(after=LOG_START, limit=10_000)
    return sum(event.type_name.startswith("shop.Order") for event in events)


def query(url: str, work: Any) -> Any:
    async def run() -> Any:
        storage = storage_from_url(url)
        try:
            return await work(storage)
        finally:
            await storage.close()

    # Playwright's sync API keeps an event loop in this thread: query from another one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result(timeout=60)


# -- the pages -------------------------------------------------------------------------------


def test_the_overview_counts_what_needs_attention(shop: Any, page: Any, tmp_path: Path) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/")
    text = page.locator("main").inner_text()
    assert "2 parked" in text
    assert "1 need intervention" in text
    assert "2 dead" in text
    photograph(page, "overview", tmp_path)


def test_streams_are_searched_by_id_and_type(shop: Any, page: Any, tmp_path: Path) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/streams")
    page.fill("input[name=q]", "o-100")
    page.select_option("select[name=type]", "shop.OrderCancelled")
    page.click("text=Search")
    rows = page.locator("table tr td:first-child").all_inner_texts()
    assert rows == ["Order-o-1001"]
    photograph(page, "streams", tmp_path)


def test_streams_are_searched_by_time(shop: Any, page: Any) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/streams?since=2026-03-02T09:45&until=2026-03-02T09:47")
    assert page.locator("table tr td:first-child").all_inner_texts() == ["Order-o-1001"]


def test_an_event_shows_its_payload_and_metadata(shop: Any, page: Any, tmp_path: Path) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/streams/Order-o-1001")
    text = page.locator("main").inner_text()
    assert "shop.OrderCancelled" in text
    assert "found a cheaper teapot" in text
    assert "correlation" in text
    photograph(page, "stream", tmp_path)


def test_personal_data_shows_as_the_redacted_placeholder(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/streams/{seeded.sealed_stream}")
    payload = page.locator("pre").inner_text()
    assert '"email": "[forgotten]"' in payload
    assert "pd1:" not in payload


def test_projections_show_the_parked_event_and_its_error(
    shop: Any, page: Any, tmp_path: Path
) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/projections")
    text = page.locator("main").inner_text()
    assert "parked" in text
    assert "KeyError: \"no column 'total'\"" in text
    photograph(page, "projections", tmp_path)


def test_the_outbox_shows_dead_letters_with_their_error(
    shop: Any, page: Any, tmp_path: Path
) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/outbox")
    ids = page.locator("table tr td:first-child").all_inner_texts()
    assert [int(i) for i in ids] == seeded.dead
    assert "broker refused: no route" in page.locator("table").inner_text()
    photograph(page, "outbox", tmp_path)


def test_the_inbox_shows_each_handlers_entries(shop: Any, page: Any, tmp_path: Path) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/inbox")
    assert page.locator("table tr td").first.inner_text() == "mailer"
    photograph(page, "inbox", tmp_path)


def test_a_saga_needing_intervention_shows_its_history(
    shop: Any, page: Any, tmp_path: Path
) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/sagas")
    photograph(page, "sagas", tmp_path)
    page.click(f"text={seeded.saga_id}")
    text = page.locator("main").inner_text()
    assert "needs_intervention" in text
    assert "compensating" in text
    photograph(page, "saga", tmp_path)


# -- the actions -----------------------------------------------------------------------------


def test_requeue_makes_the_dead_row_due_again(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/outbox")
    first = seeded.dead[0]
    page.locator("tr", has_text="broker refused").first.locator("text=Requeue").click()
    assert flash(page) == "requeued 1 row(s)"
    entry = query(seeded.url, lambda s: outbox_store_for(s).load_entry(first))
    assert not entry.dead


def test_purge_deletes_the_dead_row(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/outbox")
    last = seeded.dead[-1]
    page.locator("tr", has_text="broker refused").last.locator("text=Purge").click()
    assert flash(page) == "purged 1 dead row(s)"
    assert query(seeded.url, lambda s: outbox_store_for(s).load_entry(last)) is None


def test_retry_unparks_the_projection(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/projections")
    page.locator("tr", has_text="order-summaries").locator("text=Retry").click()
    assert "order-summaries will apply" in flash(page)
    health = query(seeded.url, lambda s: projection_health(s, "order-summaries"))
    assert health.parked is None


def test_skip_records_the_reason_and_unparks(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/projections")
    row = page.locator("tr", has_text="audit-log")
    row.locator("input[name=reason]").fill("written by a bug fixed since")
    row.locator("text=Skip event").click()
    assert "audit-log skips" in flash(page)
    health = query(seeded.url, lambda s: projection_health(s, "audit-log"))
    assert health.parked is None
    assert [skip.reason for skip in health.skipped] == ["written by a bug fixed since"]


def test_rebuild_replays_the_log_into_the_read_model(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/projections")
    page.locator("tr", has_text="order-summaries").locator("text=Rebuild").click()
    # The log's order events (the summaries handle nothing else): the seeded customer's
    # profile event is not replayed into them.
    orders = query(seeded.url, order_events)
    assert orders > 0
    assert flash(page) == f"rebuilt order-summaries: {orders} events replayed"
    lag = query(seeded.url, lambda s: projection_lag(s, "order-summaries", datetime.now(UTC)))
    assert lag.events_behind == 0


def test_inbox_purge_forgets_entries_older_than_asked(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/inbox")
    page.fill("input[name=older_than]", "0s")
    page.click("text=Purge")
    assert flash(page) == "forgot 2 inbox entries"
    assert query(seeded.url, lambda s: AdminData(s).inbox()) == []


def test_resolve_closes_the_saga_with_the_operators_note(shop: Any, page: Any) -> None:
    base, seeded = shop
    page.goto(f"{base}/admin/sagas/{seeded.saga_id}")
    page.fill("input[name=note]", "refunded by hand")
    page.click("text=Resolve")
    assert flash(page) == f"resolved {seeded.saga_id}"
    state = query(seeded.url, lambda s: SagaOrchestrator(s, []).get(seeded.saga_id))
    assert state.status is SagaStatus.RESOLVED
    assert state.history[-1].note == "refunded by hand"


def test_a_form_without_its_csrf_token_is_refused(shop: Any, page: Any) -> None:
    base, _ = shop
    page.goto(f"{base}/admin/outbox")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.value = 'x')")
    page.click("text=Purge published")
    assert "CSRF" in page.locator("body").inner_text()
