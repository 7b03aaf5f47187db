"""The README's Python examples run, in order, in one module, as a reader would paste them."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    assert BLOCK.findall(README.read_text())


def test_the_readme_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real module: dataclasses and pydantic look their annotations up in sys.modules.
    module = types.ModuleType("readme_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, block in enumerate(BLOCK.findall(README.read_text()), start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), module.__dict__)
