"""``eventfold processes``: list and show process instances that need a person; retry or
resolve them.

``list`` and ``show`` read the instances in the database alone. ``retry`` applies the
failed event again and ``resolve`` goes on past it; both then apply the events that
waited behind it, so they need the process definitions: ``--runner module:attr`` names a
:class:`~eventfold.ProcessRunner`, or a callable that takes the database URL and returns one.
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
    using,
)

if TYPE_CHECKING:
    from eventfold.application.messaging.processes import ProcessInstance, ProcessRunner
    from eventfold.ports import Storage

__all__ = ["app"]

app = typer.Typer(
    help="Process instances waiting for a person: list, show, retry or resolve them.",
    no_args_is_help=True,
)

RunnerOption = Annotated[
    str | None,
    typer.Option(
        "--runner",
        envvar="EVENTFOLD_PROCESSES",
        help="module:attr of a ProcessRunner, or of a callable taking the database URL",
        show_default=False,
    ),
]


def _row(instance: ProcessInstance) -> dict[str, Any]:
    intervention = instance.intervention
    return {
        "process": instance.process,
        "key": instance.key,
        "status": instance.status,
        "failed_event": intervention.event_type if intervention else "",
        "event_id": intervention.event_id if intervention else "",
        "waiting": len(instance.held),
        "failed_at": intervention.at if intervention else "",
        "error": intervention.error if intervention else "",
    }


_COLUMNS = ["process", "key", "status", "failed_event", "event_id", "waiting", "failed_at", "error"]


@app.command("list")
def processes_list(database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """Process instances waiting for a person, oldest failure first."""
    from eventfold.application.messaging.processes import process_interventions

    with reported():
        storage = open_storage(database_url)
    instances = run(lambda: using(storage, process_interventions))
    print_rows(
        [_row(instance) for instance in instances],
        _COLUMNS,
        as_json=as_json,
        empty="no process instance needs intervention",
    )


@app.command("show")
def processes_show(
    process: str, key: str, database_url: DatabaseUrl = None, as_json: JsonOption = False
) -> None:
    """One instance: its status, the error, its state and its intervention history."""
    with reported():
        storage = open_storage(database_url)
    instance = run(lambda: using(storage, lambda s: _found(s, process, key)))
    out.print(f"{instance.process} {instance.key}: {instance.status}", highlight=False)
    if instance.intervention is not None:
        failed = instance.intervention
        out.print(
            f"failed on {failed.event_type} {failed.event_id}: {failed.error}",
            highlight=False,
            soft_wrap=True,
        )
        out.print(f"events waiting behind it: {len(instance.held)}", highlight=False)
    out.print(f"state: {instance.state}", highlight=False, soft_wrap=True)
    print_rows(
        [
            {
                "at": entry.at,
                "event_id": entry.event_id,
                "outcome": entry.outcome,
                "error": entry.error or "",
                "note": entry.note or "",
            }
            for entry in instance.history
        ],
        ["at", "event_id", "outcome", "error", "note"],
        as_json=as_json,
        title="history",
    )


async def _found(storage: Storage, process: str, key: str) -> ProcessInstance:
    from eventfold.application.messaging.processes import load_process_instance

    instance = await load_process_instance(storage, process, key)
    if instance is None:
        raise CommandError(f"no {process} process instance {key!r}")
    return instance


@app.command("retry")
def processes_retry(
    process: str, key: str, runner: RunnerOption = None, database_url: DatabaseUrl = None
) -> None:
    """Apply the event an instance failed on again (its cause fixed), then the waiting ones."""
    with reported():
        loaded = _load_runner(runner, require_url(database_url), "retry")
    instance = run(lambda: _act(loaded, process, key, lambda: loaded.retry(process, key)))
    _report(instance)


@app.command("resolve")
def processes_resolve(
    process: str,
    key: str,
    note: Annotated[str, typer.Option(help="What was done by hand; kept in the history.")],
    runner: RunnerOption = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Go on past the event an instance failed on, put right by hand, then the waiting ones."""
    with reported():
        if not note.strip():
            raise CommandError("--note must say what was done")
        loaded = _load_runner(runner, require_url(database_url), "resolve")
    instance = run(
        lambda: _act(loaded, process, key, lambda: loaded.resolve(process, key, note=note))
    )
    _report(instance)


def _report(instance: ProcessInstance) -> None:
    out.print(f"{instance.process} {instance.key}: {instance.status}", highlight=False)
    if instance.intervention is not None:
        out.print(f"error: {instance.intervention.error}", highlight=False, soft_wrap=True)


async def _act(runner: ProcessRunner, process: str, key: str, action: Any) -> ProcessInstance:
    from eventfold.domain.errors import InvalidStateError

    try:
        await _found(runner.storage, process, key)
        try:
            instance: ProcessInstance = await action()
        except InvalidStateError as exc:
            raise CommandError(str(exc)) from exc
        return instance
    finally:
        await runner.storage.close()


def _load_runner(path: str | None, database_url: str, action: str) -> ProcessRunner:
    from eventfold.application.messaging.processes import ProcessRunner

    if not path:
        raise CommandError(
            f"{action} applies events: pass --runner module:attr (or set EVENTFOLD_PROCESSES)"
        )
    runner: ProcessRunner = load_target(
        path, database_url, option="--runner", what="the process runner", kind=ProcessRunner
    )
    return runner
