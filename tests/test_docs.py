"""The docs site's generated settings page names every setting the code declares, and the README's commands are the
ones CI runs. The oracles are the CLI's own parser (what `cropmon run --help` offers) and the dataclasses' fields."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from cropmon import config
from cropmon.cli import build_parser
from cropmon.diagnosis.settings import DiagnosisSettings

REPO = Path(__file__).resolve().parents[1]


def settings_page_module():
    spec = importlib.util.spec_from_file_location("settings_page", REPO / "docs" / "hooks" / "settings_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page() -> str:
    return settings_page_module().settings_markdown()


def table_rows(page: str, heading: str) -> dict[str, list[str]]:
    """The first column (without backticks) -> the other cells, of the Markdown table under `heading`."""
    section = page.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells[0] in ("---", "flag", "key") or cells[0].startswith("**"):
            continue
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def run_options() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {opt: a for a in sub.choices["run"]._actions for opt in a.option_strings}


def test_the_settings_page_lists_every_flag_of_cropmon_run(page):
    rows = table_rows(page, "## Flags of `cropmon run`")
    offered = {opt for opt, action in run_options().items()
               if opt.startswith("--") and action.dest not in ("help", "config")}
    assert set(rows) == offered
    for flag, (key, environment, _kind, default, what) in rows.items():
        dest = run_options()[flag].dest
        assert key.strip("`") == ("[[aoi]]" if dest == "aois" else dest)
        assert what, f"{flag} has no description"
        declared = config.SETTINGS[dest].default
        shown = str(declared).lower() if isinstance(declared, bool) else declared  # TOML's true/false
        assert default == ("-" if declared in (None, ()) else f"`{shown}`"), flag
        if dest != "aois":  # every other setting is read from its CROPMON_* variable (an AOI list is not)
            assert environment == f"`CROPMON_{dest.upper()}`"
            variable = {f"CROPMON_{dest.upper()}": _example_text(dest)}
            assert dest in config.from_environment(variable)


def test_the_settings_page_names_every_runconfig_field_and_every_diagnosis_key(page):
    for f in dataclasses.fields(config.RunConfig):
        assert f"`{config.flag_name(f.name)}`" in page or f"### `[{f.name}]`" in page, f.name
    diagnosis = table_rows(page, "### `[diagnosis]`")
    assert list(diagnosis) == [f.name for f in dataclasses.fields(DiagnosisSettings)]
    defaults = DiagnosisSettings()
    for name, (_kind, default, _what) in diagnosis.items():
        value = getattr(defaults, name)
        shown = "-" if value is None else f"`{str(value).lower() if isinstance(value, bool) else value}`"
        assert default == shown, name


def test_the_settings_page_describes_the_diagnosis_keys_from_their_comments(page):
    diagnosis = table_rows(page, "### `[diagnosis]`")
    assert diagnosis["min_agreement"][2] == "share of a crop's GT fields predicted as the crop"
    described = [name for name, (_k, _d, what) in diagnosis.items() if what != "-"]
    assert len(described) >= len(diagnosis) - 2, "most keys carry a comment in diagnosis/settings.py"
    assert "**underperforming crops**" in page  # the comment lines over a group of keys head their rows


def test_a_flag_the_cli_does_not_take_fails_the_build(monkeypatch):
    module = settings_page_module()
    real = module._run_parser_flags
    monkeypatch.setattr(module, "_run_parser_flags", lambda parser: {
        flag: kind for flag, kind in real(parser).items() if flag != "--seed"})
    with pytest.raises(RuntimeError, match="--seed"):
        module.settings_markdown()


def _example_text(name: str) -> str:
    """A valid value of a setting as an environment variable's text."""
    choices = config.SETTINGS[name].metadata.get("choices")
    if choices:
        return choices[-1]
    return {int: "3", float: "5", bool: "true"}.get(config.scalar_type(name), "some/path")


def test_the_readme_test_command_is_the_one_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if "pytest" in line]
    assert len(commands) == 1, "one test command in the README"
    test_command = shlex.split(commands[0].split("&&")[-1])  # .venv/bin/python -m pytest -q
    assert f"python -m pytest {' '.join(test_command[3:])}".strip() in ci
    assert 'pip install -e ".[test]"' in commands[0]
