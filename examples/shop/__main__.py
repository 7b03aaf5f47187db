"""``python -m examples.shop``: play the shop's scripted day on a fresh database."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from .bootstrap import DEFAULT_DATABASE_URL
from .demo import run_demo

app = typer.Typer(add_completion=False)


@app.command()
def main(
    database_url: Annotated[
        str,
        typer.Option(
            envvar="EVENTFOLD_DATABASE_URL",
            help="sqlite:///shop.db or postgresql://user@host/db (its tables are recreated)",
        ),
    ] = DEFAULT_DATABASE_URL,
    schema: Annotated[str | None, typer.Option(help="PostgreSQL schema for the tables")] = None,
) -> None:
    """Play the shop's scripted day and show what each step stored."""
    asyncio.run(run_demo(database_url, schema=schema))


if __name__ == "__main__":
    app()
