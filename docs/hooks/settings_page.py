"""The docs site's settings page, written at build time from the declarations themselves (a mkdocs hook).

Every flag of `cropmon run`, its config-file key and CROPMON_* variable, type, default and help come from
`cropmon.config.RunConfig` (the one place a setting is declared); the `[diagnosis]` table's keys, defaults and
descriptions from `cropmon.diagnosis.settings.DiagnosisSettings` and the comments beside its fields. The page is
never committed, so it cannot drift: `mkdocs build` makes it, tests/test_docs.py checks that it names every setting.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
import typing
from typing import Any

PAGE = "settings.md"


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=settings_markdown()))
    return files


def settings_markdown() -> str:
    """The whole page as Markdown."""
    from cropmon import config as cfg
    from cropmon.cli import build_parser

    run_flags = _run_parser_flags(build_parser())
    lines = [
        "# Settings",
        "",
        "Generated from `cropmon.config.RunConfig` and `cropmon.diagnosis.settings.DiagnosisSettings` when the site",
        "is built: this page lists what the code declares, no more, no less.",
        "",
        "Where a setting comes from, and in which order they override each other:",
        "[Usage, Configuration](usage.md#configuration). A config file's keys are the settings' names below, at its",
        "top level or in a `[cropmon]` table.",
        "",
        "## Flags of `cropmon run`",
        "",
        "| flag | config key | environment | type | default | what |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    comments = field_comments(cfg.RunConfig)
    for name in cfg.FLAG_SETTINGS:
        meta = cfg.SETTINGS[name].metadata
        flag = cfg.flag_name(name)
        if meta["choices"]:
            kind = " \\| ".join(f"`{c}`" for c in meta["choices"])
        else:
            kind = f"`{meta['metavar']}`" if meta["metavar"] else _type_name(cfg.TYPES[name])
        environment = "-" if name in _NOT_FROM_ENVIRONMENT else f"`CROPMON_{name.upper()}`"
        if flag not in run_flags:
            raise RuntimeError(f"RunConfig declares {flag}, which `cropmon run` does not take (cli.py)")
        what = _cell(meta["help"])
        if run_flags[flag] == "append" and "repeatable" not in what:
            what += " (repeatable)"
        lines.append(f"| `{flag}` | `{_config_key(name)}` | {environment} | {kind} | "
                     f"{_default(cfg.SETTINGS[name])} | {what} |")
    lines += [
        "",
        "Besides these, `cropmon run` takes `--config FILE` (the TOML file above) and `-v`/`-vv` (more log lines);",
        "`cropmon twin` and `cropmon compare` have flags of their own (`python -m cropmon twin --help`).",
        "",
        "## Tables of the config file",
        "",
    ]
    for name in cfg.SETTINGS:
        if name in cfg.FLAG_SETTINGS:
            continue
        kind = typing.get_args(cfg.TYPES[name]) or (cfg.TYPES[name],)
        kind = next(k for k in kind if k is not type(None))
        what = comments.get(name, "")
        lines += [f"### `[{name}]`", "", what[:1].upper() + what[1:].rstrip(".") + ".", ""]
        if dataclasses.is_dataclass(kind) and kind.__doc__:
            lines += [_indented_code_as_fenced(kind.__doc__), ""]
        if kind.__name__ == "DiagnosisSettings":
            lines += _diagnosis_table(kind)
    return "\n".join(lines).rstrip() + "\n"


# Settings the environment does not set (config.from_environment): tables and the repeatable AOIs.
_NOT_FROM_ENVIRONMENT = ("aois", "diagnosis")


def _config_key(name: str) -> str:
    """The key in the config file: the setting's name, but a file lists AOIs as [[aoi]] tables."""
    return "[[aoi]]" if name == "aois" else name


def _diagnosis_table(kind: type) -> list[str]:
    comments = field_comments(kind)
    lines = ["| key | type | default | what |", "| --- | --- | --- | --- |"]
    hints = typing.get_type_hints(kind)
    section = None
    for f in dataclasses.fields(kind):
        if f.name in _sections(kind) and _sections(kind)[f.name] != section:
            section = _sections(kind)[f.name]
            lines.append(f"| **{_cell(section)}** | | | |")
        what = _cell(comments.get(f.name) or "-")
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_default(f)} | {what} |")
    return [*lines, ""]


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the one on its line, else the comment lines just above it."""
    return {name: trailing or above for name, (trailing, above, _) in _comment_blocks(cls).items()}


def _sections(cls: type) -> dict[str, str]:
    """Field -> the comment lines above it when the field has its own comment too: a heading over a group."""
    return {name: above for name, (trailing, above, _) in _comment_blocks(cls).items() if trailing and above}


def _comment_blocks(cls: type) -> dict[str, tuple[str, str, int]]:
    """field name -> (comment on its line, comment lines above it, line number), from the class body's tokens."""
    names = {f.name for f in dataclasses.fields(cls)}
    source = inspect.getsource(cls)
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    out: dict[str, tuple[str, str, int]] = {}
    above: list[str] = []
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT and tok.line.strip().startswith("#"):
            above.append(_comment_text(tok.string))
        elif tok.type == tokenize.NAME and tok.string in names and tok.start[1] == 4 and _is_annotation(tokens, i):
            trailing = _comment_on_line(tokens, i)
            out.setdefault(tok.string, (trailing, " ".join(above), tok.start[0]))
            above = []
        elif tok.type == tokenize.NL and not tok.line.strip():
            above = []
    return out


def _is_annotation(tokens: list[tokenize.TokenInfo], i: int) -> bool:
    return i + 1 < len(tokens) and tokens[i + 1].string == ":"


def _comment_on_line(tokens: list[tokenize.TokenInfo], i: int) -> str:
    """The comment that ends the (possibly continued) statement starting at token i; '' when none."""
    depth = 0
    for tok in tokens[i:]:
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.COMMENT and depth == 0:
            return _comment_text(tok.string)
        elif tok.type == tokenize.NEWLINE:
            return ""
    return ""


def _comment_text(comment: str) -> str:
    text = comment.lstrip("#").strip()
    # a linter's or formatter's instruction is no description
    return "" if text.startswith(("noqa", "type:", "fmt:")) else text


def _run_parser_flags(parser: Any) -> dict[str, str]:
    """flag -> argparse action kind ('store', 'append', ...) of the `run` subcommand, as the CLI builds it."""
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    return {opt: type(a).__name__.removesuffix("Action").lstrip("_").lower() or "store"
            for a in run._actions for opt in a.option_strings}


def _type_name(kind: Any) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is tuple or kind is tuple:
        return "list"
    if args:
        return " or ".join(_type_name(a) for a in args)
    names = {bool: "true/false", int: "integer", float: "number", str: "text"}
    return names.get(kind, "table")  # a typed object (a class list, settings): a TOML table in the config file


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        return "(a table)"
    else:
        return "(required)"
    if value is None or value == ():
        return "-"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _indented_code_as_fenced(doc: str) -> str:
    """A class's raw docstring (its body indented 4 spaces) as Markdown: lines indented further are an example,
    fenced as TOML; the rest is prose. (inspect.getdoc would strip an example that is all the body has.)"""
    out, code = [], []
    for line in [*doc.splitlines(), ""]:
        if line.startswith(" " * 8):
            code.append(line[8:])
            continue
        if code:
            out += ["```toml", *code, "```"]
            code = []
        out.append(line.removeprefix(" " * 4))
    return "\n".join(out).strip()
