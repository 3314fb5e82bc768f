"""The house: data flows one way, and every room is small enough to read in one sitting.

files → `flows/` (indexing) → the table ← `api/` (serving) ← `frontend/` (the page); what both
sides need lives in `core/`, which depends on neither.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 120
MAX_SCRIPT_LINES = 300


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in the module (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"), [("api", {"flows"}), ("flows", {"api"}), ("core", {"api", "flows", "main"})]
)
def test_the_packages_import_only_downstream(package: str, forbidden: set[str]) -> None:
    offending = {p.relative_to(ROOT).as_posix(): imported(p) & forbidden for p in modules(package)}
    assert {p: names for p, names in offending.items() if names} == {}


def test_no_module_of_the_engine_is_over_450_lines() -> None:
    engine = [ROOT / "main.py", *modules("core"), *modules("flows"), *modules("api")]
    long = {
        p.relative_to(ROOT).as_posix(): n for p in engine if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_120_lines() -> None:
    long: dict[str, int] = {}
    for path in [ROOT / "main.py", *modules("core"), *modules("flows"), *modules("api"), *modules("bench")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT).as_posix()}:{node.name}"] = size
    assert long == {}


def test_no_script_of_the_page_is_over_300_lines() -> None:
    scripts = sorted((ROOT / "frontend").rglob("*.js"))
    assert scripts
    long = {
        p.relative_to(ROOT).as_posix(): n for p in scripts if (n := len(p.read_text().splitlines())) > MAX_SCRIPT_LINES
    }
    assert long == {}


def test_importing_a_module_builds_no_app_and_reads_no_settings() -> None:
    """`uvicorn --factory api.app:create_app` builds the app; importing builds nothing."""
    probe = (
        "import api.app, api.cli, flows.engine, main\n"
        "from core.settings import get_settings\n"
        "assert not hasattr(api.app, 'app'), 'api.app builds an app at import'\n"
        "print(get_settings.cache_info().currsize)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0", "a module read the settings at import"
