"""Every ```python block in README.md and docs/**/*.md runs, as a reader would paste it.

A block runs on its own, in a fresh module, in an empty directory of its own. An HTML
comment on the line before a block says more; markers combine, separated by commas, and a
program has the markers of all its blocks:

- ``<!-- snippet: continues -->``: run after the blocks before it in the same module
  (it reuses their names);
- ``postgres`` (or another service: ``redis``, ``rabbitmq``, ``nats``): it needs that
  service; a PostgreSQL program finds its database in ``DATABASE_URL``, which names a
  schema of its own, dropped afterwards;
- ``sqlite-and-postgres``: run twice, without ``DATABASE_URL`` (the program then uses
  its SQLite default) and with it;
- ``after=docs/page.md``: run that page's programs first, in the same module (the
  tutorial on PostgreSQL reruns the tutorial's code);
- ``pytest``: the program is a test module, written to a file and run by pytest in a
  process of its own with eventfold's plugin; every test must pass, none may skip
  (PostgreSQL in ``EVENTFOLD_TEST_POSTGRES``).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
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
    r"(?:<!--\s*snippet:\s*(?P<markers>[\w ,./=-]+?)\s*-->\s*\n)?```python\n(?P<code>.*?)```",
    re.DOTALL,
)
SERVICES = {"postgres", "redis", "rabbitmq", "nats"}
BOTH = "sqlite-and-postgres"
MARKERS = {"continues", "pytest", BOTH, *SERVICES}


@dataclass
class Snippet:
    """One program: a block and the blocks that continue it."""

    document: Path
    line: int
    code: list[tuple[Path, int, str]] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    both: bool = False
    pytest: bool = False

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
        after = {m for m in markers if m.startswith("after=")}
        markers -= after
        unknown = markers - MARKERS
        assert not unknown, f"{document.name}:{line}: unknown snippet markers {unknown}"
        if "continues" in markers:
            assert found, f"{document.name}:{line} continues, but no block comes before it"
            program = found[-1]
        else:
            program = Snippet(document, line)
            found.append(program)
        for marker in sorted(after):
            assert not program.code, f"{document.name}:{line}: after= starts a program"
            for earlier in snippets(ROOT / marker.removeprefix("after=")):
                program.code.extend(earlier.code)
                program.services |= earlier.services
        program.code.append((document, line, match["code"]))
        program.services |= markers & SERVICES
        program.both = program.both or BOTH in markers
        program.pytest = program.pytest or "pytest" in markers
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


def run_as_tests(snippet: Snippet, directory: Path) -> None:
    """Run the program as a pytest module in a process of its own; every test must pass."""
    require_service("postgres")
    module = directory / "test_snippet.py"
    module.write_text("\n".join(code for _, _, code in snippet.code))
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "EVENTFOLD_TEST_POSTGRES": POSTGRES_DSN,
    }
    command = [sys.executable, "-m", "pytest", str(module), "-q", "-rs", "-W", "error"]
    command += ["-p", "no:cacheprovider", "-p", "eventfold.testing.plugin"]
    command += ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
    done = subprocess.run(
        command,
        check=False,
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "skipped" not in report, report


@pytest.mark.parametrize("snippet", ALL, ids=IDS)
def test_the_example_runs(
    snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in sorted(snippet.services):
        require_service(service)
    if snippet.pytest:
        run_as_tests(snippet, tmp_path)
        return
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    schema = f"snippet_{uuid.uuid4().hex[:12]}"
    if "postgres" in snippet.services:
        monkeypatch.setenv("DATABASE_URL", f"{POSTGRES_DSN}?schema={schema}")
    # A real module: dataclasses and pydantic look their annotations up in sys.modules.
    module = types.ModuleType(f"snippet_{uuid.uuid4().hex[:8]}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        for document, line, code in snippet.code:
            # Line numbers in a traceback are the document's own.
            source = "\n" * (line - 1) + code
            exec(compile(source, str(document), "exec"), module.__dict__)
    finally:
        if "postgres" in snippet.services:
            asyncio.run(drop_schema(schema))
