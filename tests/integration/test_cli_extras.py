"""The ``eventfold`` command in a fresh virtualenv holding only ``eventfold[cli,sqlite]``.

The virtualenv is real (its own interpreter, no access to the test environment's
packages); instead of downloading, its site-packages links the distributions the extras
require from the test environment, so the test runs offline and in seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def eventfold_requires(extras: frozenset[str]) -> list[Requirement]:
    """What this source tree's pyproject.toml says ``eventfold[extras]`` requires."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def requirements_closure(extras: set[str]) -> set[str]:
    """The distributions ``eventfold[extras]`` needs, as installed here."""
    seen: set[str] = set()
    todo = list(eventfold_requires(frozenset(extras)))
    while todo:
        requirement = todo.pop()
        if requirement.name == "eventfold":
            todo += eventfold_requires(frozenset(requirement.extras))
            continue
        key = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            marker = needed.marker
            wanted = requirement.extras or {""}
            if marker is None or any(marker.evaluate({"extra": e}) for e in wanted):
                todo.append(needed)
    return seen


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a new virtualenv with eventfold and what [cli,sqlite] need."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False, symlinks=True)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    site = Path(purelib)
    for name in requirements_closure({"cli", "sqlite"}):
        distribution = metadata.distribution(name)
        tops = {Path(str(f)).parts[0] for f in distribution.files or [] if ".." not in str(f)}
        for top in tops - {"__pycache__"}:
            source = Path(str(distribution.locate_file(top)))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    (site / "eventfold.pth").write_text(f"{ROOT / 'src'}\n")
    return python


def eventfold(
    python: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [python, "-m", "eventfold.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_the_fresh_environment_has_no_postgresql_driver(fresh_python: Path) -> None:
    probe = subprocess.run(
        [fresh_python, "-c", "import asyncpg"], capture_output=True, text=True, check=False
    )
    assert "No module named 'asyncpg'" in probe.stderr


def test_help_works_with_only_the_cli_and_sqlite_extras(fresh_python: Path) -> None:
    result = eventfold(fresh_python, "--help")
    assert result.returncode == 0, result.stderr
    assert "projections" in result.stdout
    assert "outbox" in result.stdout


def test_db_init_and_streams_list_work_on_sqlite_with_only_these_extras(
    fresh_python: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert eventfold(fresh_python, "db", "init", "--database-url", url).returncode == 0
    result = eventfold(fresh_python, "streams", "list", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "no streams yet" in result.stdout


def test_a_postgresql_command_without_its_extra_says_which_pip_install_to_run(
    fresh_python: Path,
) -> None:
    result = eventfold(
        fresh_python, "streams", "list", "--database-url", "postgresql://postgres@127.0.0.1/x"
    )
    assert result.returncode == 1
    assert "pip install 'eventfold[postgres]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_outbox_command_without_the_postgresql_extra_is_one_line(fresh_python: Path) -> None:
    url = "postgresql://postgres@127.0.0.1/x"
    result = eventfold(fresh_python, "outbox", "status", "--database-url", url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: this command needs the asyncpg package, which is not installed: "
        "pip install 'eventfold[postgres]'"
    ]
