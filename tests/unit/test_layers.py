"""Imports point one way, and the domain imports nothing from infrastructure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import eventfold

DOMAIN = Path(eventfold.__file__).parent / "domain"
# The standard library is fine for a pure model, except logging: a domain that logs has
# taken on an infrastructure concern (STYLE habit 2).
ALLOWED_STDLIB = set(sys.stdlib_module_names) - {"logging"}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _allowed(module: str) -> bool:
    top = module.split(".", maxsplit=1)[0]
    return (
        top in ALLOWED_STDLIB
        or module == "eventfold.domain"
        or module.startswith("eventfold.domain.")
    )


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    offending = [
        f"{path.relative_to(DOMAIN.parent)}:{line} imports {module}"
        for path in sorted(DOMAIN.rglob("*.py"))
        for line, module in _imported_modules(path)
        if not _allowed(module)
    ]
    assert not offending, "the domain must stay pure:\n" + "\n".join(offending)


def test_the_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    project = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _import_cycles() -> list[list[str]]:
    """Groups of eventfold modules that import each other, directly or through others."""
    import grimp  # noqa: PLC0415 - import-linter's graph builder, only this test needs it

    graph = grimp.build_graph("eventfold", include_external_packages=False)
    cycles: list[list[str]] = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if module < imported and graph.chain_exists(imported=module, importer=imported):
                cycles.append([module, imported])
    return cycles


def test_no_module_of_eventfold_imports_itself_back_through_another() -> None:
    assert _import_cycles() == []
