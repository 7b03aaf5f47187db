"""Every ```python block in README.md and docs/**/*.md runs, as a reader would paste it.

A block runs on its own, in a fresh module, in an empty directory of its own. An HTML
comment on the line before a block, ``<!-- snippet: continues -->``, makes it run after
the blocks before it in the same module (it reuses their names); ``postgres`` (or another
service's name: ``redis``, ``rabbitmq``, ``nats``) says it needs that service. A PostgreSQL
snippet finds its database in ``DATABASE_URL``, which names a schema of its own, dropped
afterwards. ``sqlite-and-postgres`` runs a program twice: without ``DATABASE_URL`` (it then
uses its SQLite default) and with it. Markers combine: ``<!-- snippet: continues, postgres
-->``; a program has the markers of all its blocks.
"""

from __future__ import annotations

import asyncio
import re
import sys
import types
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_DSN, drop_schema, require_service

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(
    r"(?:<!--\s*snippet:\s*(?P<markers>[\w ,-]+?)\s*-->\s*\n)?```python\n(?P<code>.*?)```",
    re.DOTALL,
)
SERVICES = {"postgres", "redis", "rabbitmq", "nats"}
BOTH = "sqlite-and-postgres"
MARKERS = {"continues", BOTH, *SERVICES}


@dataclass
class Snippet:
    """One program: a block and the blocks that continue it."""

    document: Path
    line: int
    code: list[tuple[int, str]] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    both: bool = False

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def snippets(document: Path) -> list[Snippet]:
    """The programs in one document, in order."""
    text = document.read_text()
    found: list[Snippet] = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        markers = {m.strip() for m in (match["markers"] or "").split(",") if m.strip()}
        unknown = markers - MARKERS
        assert not unknown, f"{document.name}:{line}: unknown snippet markers {unknown}"
        if "continues" in markers:
            assert found, f"{document.name}:{line} continues, but no block comes before it"
            program = found[-1]
        else:
            program = Snippet(document, line)
            found.append(program)
        program.code.append((line, match["code"]))
        program.services |= markers & SERVICES
        program.both = program.both or BOTH in markers
    return found


def runs(document: Path) -> list[Snippet]:
    """Each program once per database it runs on."""
    result: list[Snippet] = []
    for program in snippets(document):
        result.append(program)
        if program.both:
            result.append(replace(program, services={*program.services, "postgres"}, both=False))
    return result


ALL = [snippet for document in DOCUMENTS for snippet in runs(document)]
IDS = [f"{s.name}{'-postgres' if 'postgres' in s.services else ''}" for s in ALL]


def test_the_readme_and_the_docs_have_python_examples() -> None:
    documents = {snippet.document for snippet in ALL}
    assert ROOT / "README.md" in documents
    assert any(document.is_relative_to(ROOT / "docs") for document in documents)


@pytest.mark.parametrize("snippet", ALL, ids=IDS)
def test_the_example_runs(
    snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in sorted(snippet.services):
        require_service(service)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    schema = f"snippet_{uuid.uuid4().hex[:12]}"
    if "postgres" in snippet.services:
        monkeypatch.setenv("DATABASE_URL", f"{POSTGRES_DSN}?schema={schema}")
    # A real module: dataclasses and pydantic look their annotations up in sys.modules.
    module = types.ModuleType(f"snippet_{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for line, code in snippet.code:
            # Line numbers in a traceback are the document's own.
            source = "\n" * (line - 1) + code
            exec(compile(source, str(snippet.document), "exec"), module.__dict__)
    finally:
        if "postgres" in snippet.services:
            asyncio.run(drop_schema(schema))
