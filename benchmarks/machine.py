"""What the numbers were measured on: machine, Python, libraries, database settings."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

_LIBRARIES = (
    "eventfold",
    "eventsourcing",
    "psycopg",
    "pydantic",
    "pydantic-core",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
)
_PG_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "commit_delay",
    "shared_buffers",
    "max_connections",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, OS, Python and library versions."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "sqlite_library": sqlite3.sqlite_version,
    }


async def postgres_info(dsn: str) -> dict[str, Any]:
    """The server's version and the settings that decide commit cost."""
    connection = await asyncpg.connect(dsn)
    try:
        info: dict[str, Any] = {"version": await connection.fetchval("SHOW server_version")}
        for name in _PG_SETTINGS:
            info[name] = await connection.fetchval(f"SHOW {name}")
        return info
    finally:
        await connection.close()


def describe(machine: dict[str, Any]) -> str:
    """A few lines for the top of the printed report."""
    libraries = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    lines = [
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"{machine['os']}",
        f"- Python {machine['python']}; {libraries}; SQLite {machine['sqlite_library']}",
    ]
    postgres = machine.get("postgres")
    if postgres:
        settings = ", ".join(f"{k}={v}" for k, v in postgres.items() if k != "version")
        lines.append(f"- PostgreSQL {postgres['version']} (same host): {settings}")
    sqlite = machine.get("sqlite_pragmas")
    if sqlite:
        lines.append("- SQLite pragmas: " + ", ".join(f"{k}={v}" for k, v in sqlite.items()))
    return "\n".join(lines)
