"""``eventfold admin``: serve the admin page for a database."""

from __future__ import annotations

from typing import Annotated

import typer

from eventfold.cli._common import (
    AppOption,
    DatabaseUrl,
    err,
    load_app,
    open_storage,
    reported,
    require_url,
)

__all__ = ["app"]

app = typer.Typer(help="The admin page in a browser.", invoke_without_command=True)


@app.callback()
def admin(
    database_url: DatabaseUrl = None,
    app_path: AppOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="EVENTFOLD_ADMIN_TOKEN",
            help="Required from every browser when not on localhost (?token=... once).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the admin page (streams, projections, outbox, inbox, sagas) until Ctrl-C.

    With ``--app`` the page also redacts the personal fields of the application's event
    classes and can rebuild its projections.
    """
    with reported():
        import uvicorn

        from eventfold.admin import create_admin_app

        url = require_url(database_url)
        if app_path:
            application = load_app(app_path, url)
            storage = application.storage
            events, projections = application.events, application.projections
        else:
            storage, events, projections = open_storage(url), None, []
        web = create_admin_app(storage, events=events, projections=projections, token=token)
    err.print(f"eventfold admin for {storage.name} on http://{host}:{port}/", highlight=False)
    uvicorn.run(web, host=host, port=port, log_level="warning")
