"""The documentation stays true to the code: every setting `core/settings.py` reads is in
docs/configuration.md with the code's default, `.env` holds those defaults, the compose files take
their variables from `.env`, and every relative link in README.md and docs/ leads somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import ROOT
from dotenv import dotenv_values

import core.settings
from core.settings import DEFAULTS, Settings, load_settings

CONFIGURATION = ROOT / "docs" / "configuration.md"
DOT_ENV = ROOT / ".env"
COMPOSE_FILES = sorted(ROOT.glob("docker-compose*.yml"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# `.env` values that differ from the code's defaults on purpose: NAME → why. None today; an entry
# here must also be explained next to the value in `.env`.
DELIBERATE_DIFFERENCES: dict[str, str] = {}

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{3,}")


@pytest.fixture
def code_defaults(tmp_path: Path) -> Settings:
    """The settings as the code computes them when nothing is set."""
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return load_settings({}, env_file=empty)


def variable_names(node: ast.AST) -> set[str]:
    """String literals under `node` that look like environment variable names."""
    return {
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and _ENV_NAME.fullmatch(n.value)
    }


def settings_source() -> ast.Module:
    return ast.parse(Path(core.settings.__file__).read_text())


def documented(section: str) -> dict[str, str]:
    """NAME → default, from the table under `## {section}` in docs/configuration.md."""
    text = CONFIGURATION.read_text()
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"docs/configuration.md has no section '## {section}'"
    table: dict[str, str] = {}
    for line in found[1].splitlines():
        row = re.match(r"\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", line)
        if row is None:
            continue
        name, cell = row[1], row[2].strip()
        assert name not in table, f"{name} is documented twice"
        if cell == "*(empty)*":
            table[name] = ""
        else:
            value = re.fullmatch(r"`([^`]*)`", cell)
            assert value, f"{name}: write the default as `value` or *(empty)*, not {cell!r}"
            table[name] = value[1]
    return table


class TestConfiguration:
    def test_the_code_reads_exactly_the_names_in_defaults(self) -> None:
        module = settings_source()
        load = next(n for n in ast.walk(module) if isinstance(n, ast.FunctionDef) and n.name == "load_settings")
        outside = variable_names(module) - set(DEFAULTS)
        assert not outside, f"core/settings.py reads {sorted(outside)}, which DEFAULTS does not list"
        unread = set(DEFAULTS) - variable_names(load)
        assert not unread, f"load_settings never names {sorted(unread)}"

    def test_every_setting_is_documented_with_the_codes_default(self, tmp_path: Path, code_defaults: Settings) -> None:
        docs = documented("Settings")
        missing = set(DEFAULTS) - set(docs)
        assert not missing, f"docs/configuration.md does not document {sorted(missing)}"
        extra = set(docs) - set(DEFAULTS)
        assert not extra, f"docs/configuration.md documents {sorted(extra)}, which core/settings.py does not read"
        empty = tmp_path / "empty.env"
        for name, default in docs.items():
            assert default == DEFAULTS[name], (
                f"{name}: documented {default!r}, the code's default is {DEFAULTS[name]!r}"
            )
            # what load_settings makes of the documented value is what it does with nothing set
            assert load_settings({name: default}, env_file=empty) == code_defaults, (
                f"{name}: load_settings reads the documented default {default!r} as something else than no value"
            )

    def test_dot_env_holds_the_codes_defaults(self, code_defaults: Settings) -> None:
        env = dotenv_values(DOT_ENV)
        missing = set(DEFAULTS) - set(env)
        assert not missing, f".env does not list {sorted(missing)}"
        for name, default in DEFAULTS.items():
            if name in DELIBERATE_DIFFERENCES:
                assert DELIBERATE_DIFFERENCES[name] and env[name] != default, name
            else:
                assert (env[name] or "") == default, f".env: {name}={env[name]}, the code's default is {default!r}"
        if not DELIBERATE_DIFFERENCES:
            assert load_settings({}, env_file=DOT_ENV) == code_defaults

    def test_dot_env_lists_nothing_undocumented(self) -> None:
        compose_only = documented("Docker Compose only")
        for name, value in dotenv_values(DOT_ENV).items():
            if name in DEFAULTS:
                continue
            assert name in compose_only, f".env sets {name}, which docs/configuration.md does not document"
            assert (value or "") == compose_only[name], f".env: {name}={value}, documented {compose_only[name]!r}"

    def test_compose_takes_its_variables_from_dot_env(self) -> None:
        env = dotenv_values(DOT_ENV)
        for path in COMPOSE_FILES:
            text = re.sub(r"\$\$", "", path.read_text())  # $$: the container's own variables
            for name, fallback in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?", text):
                assert name in env, f"{path.name} uses ${{{name}}}, which .env does not set"
                if fallback:
                    assert fallback == (env[name] or ""), f"{path.name}: ${{{name}}} falls back to {fallback!r}"


def _without_code_blocks(markdown: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.M | re.S)


def _without_code(markdown: str) -> str:
    """The text outside code blocks and inline code, where links are links."""
    return re.sub(r"`[^`\n]*`", "", _without_code_blocks(markdown))


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings."""
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _without_code_blocks(page.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
        text = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(text, 0)
        seen[text] = count + 1
        ids.add(text if count == 0 else f"{text}-{count}")
    return ids


def relative_links(page: Path) -> list[str]:
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _without_code(page.read_text()))
    return [t for t in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(page: Path) -> None:
    broken = []
    for link in relative_links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading in {target.relative_to(ROOT)}")
    assert not broken, broken


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024
