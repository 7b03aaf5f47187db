"""``eventfold sagas``: list and show saga instances; retry or resolve those that need a person.

``list``, ``show`` and ``resolve`` read and write the instances in the database alone.
``retry`` runs compensations again, so it needs the saga definitions: ``--orchestrator
module:attr`` names a :class:`~eventfold.SagaOrchestrator`, or a callable that takes the
database URL and returns one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventfold.cli._common import (
    CommandError,
    DatabaseUrl,
    JsonOption,
    load_target,
    open_storage,
    out,
    print_rows,
    reported,
    require_url,
    run,
)

if TYPE_CHECKING:
    from eventfold.application.messaging.sagas import SagaOrchestrator, SagaState
    from eventfold.ports import Storage

__all__ = ["app"]

app = typer.Typer(
    help="Saga instances: list, show, retry or resolve those waiting for a person.",
    no_args_is_help=True,
)

OrchestratorOption = Annotated[
    str | None,
    typer.Option(
        "--orchestrator",
        envvar="EVENTFOLD_SAGAS",
        help="module:attr of a SagaOrchestrator, or of a callable taking the database URL",
        show_default=False,
    ),
]


def _row(state: SagaState) -> dict[str, Any]:
    return {
        "saga_id": state.saga_id,
        "saga": state.saga,
        "status": str(state.status),
        "failed_step": state.failed_step,
        "updated_at": state.updated_at,
        "last_error": state.last_error,
    }


async def _with(storage: Storage, work: Any) -> Any:
    from eventfold.application.messaging.sagas import SagaOrchestrator

    try:
        return await work(SagaOrchestrator(storage, []))
    finally:
        await storage.close()


def _statuses(status: list[str] | None) -> list[Any]:
    from eventfold.application.messaging.sagas import SagaStatus

    try:
        return [SagaStatus(value) for value in status or []]
    except ValueError:
        known = ", ".join(s.value for s in SagaStatus)
        raise CommandError(f"unknown status in {status}: use {known}") from None


@app.command("list")
def sagas_list(
    database_url: DatabaseUrl = None,
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only instances in this status (repeatable): needs_intervention, ..."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Saga instances, oldest first: all, or those in the statuses asked for."""
    with reported():
        chosen = _statuses(status)
        storage = open_storage(database_url)
    states = run(lambda: _with(storage, lambda o: o.instances(*chosen)))
    print_rows(
        [_row(state) for state in states],
        ["saga_id", "saga", "status", "failed_step", "updated_at", "last_error"],
        as_json=as_json,
        empty="no saga instances",
    )


@app.command("show")
def sagas_show(saga_id: str, database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """One instance: its status, data and history."""
    with reported():
        storage = open_storage(database_url)
    state = run(lambda: _with(storage, lambda o: _found(o, saga_id)))
    out.print(f"{state.saga_id} ({state.saga}): {state.status}", highlight=False)
    if state.last_error:
        out.print(f"last error: {state.last_error}", highlight=False, soft_wrap=True)
    out.print(f"data: {state.data}", highlight=False, soft_wrap=True)
    print_rows(
        [
            {
                "at": entry.at,
                "step": entry.step,
                "outcome": entry.outcome,
                "attempt": entry.attempt,
                "error": entry.error or "",
                "note": entry.note or "",
            }
            for entry in state.history
        ],
        ["at", "step", "outcome", "attempt", "error", "note"],
        as_json=as_json,
        title="history",
    )


async def _found(orchestrator: SagaOrchestrator, saga_id: str) -> SagaState:
    state = await orchestrator.get(saga_id)
    if state is None:
        raise CommandError(f"no saga instance {saga_id!r}")
    return state


@app.command("resolve")
def sagas_resolve(
    saga_id: str,
    note: Annotated[str, typer.Option(help="What was done by hand; kept in the history.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Close an instance that needs intervention, once it was put right by hand."""
    with reported():
        if not note.strip():
            raise CommandError("--note must say what was done")
        storage = open_storage(database_url)
    state = run(lambda: _with(storage, lambda o: _resolve(o, saga_id, note)))
    out.print(f"{state.saga_id}: {state.status}", highlight=False)


async def _resolve(orchestrator: SagaOrchestrator, saga_id: str, note: str) -> SagaState:
    await _found(orchestrator, saga_id)
    return await orchestrator.resolve(saga_id, note=note)


@app.command("retry")
def sagas_retry(
    saga_id: str,
    orchestrator: OrchestratorOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run an intervention's remaining compensations again, once its cause was fixed."""
    with reported():
        url = require_url(database_url)
        loaded = _load_orchestrator(orchestrator, url)
    state = run(lambda: _retry(loaded, saga_id))
    out.print(f"{state.saga_id}: {state.status}", highlight=False)
    if state.last_error:
        out.print(f"last error: {state.last_error}", highlight=False, soft_wrap=True)


async def _retry(orchestrator: SagaOrchestrator, saga_id: str) -> SagaState:
    try:
        await _found(orchestrator, saga_id)
        return await orchestrator.retry(saga_id)
    finally:
        await orchestrator.storage.close()


def _load_orchestrator(path: str | None, database_url: str) -> SagaOrchestrator:
    from eventfold.application.messaging.sagas import SagaOrchestrator

    if not path:
        raise CommandError(
            "retry runs compensations: pass --orchestrator module:attr (or set EVENTFOLD_SAGAS)"
        )
    orchestrator: SagaOrchestrator = load_target(
        path, database_url, option="--orchestrator", what="the orchestrator", kind=SagaOrchestrator
    )
    return orchestrator
