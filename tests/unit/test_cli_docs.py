"""docs/cli.md equals the parser of worker/cli/parser.py, both ways: every command has its section,
every argument its row (with its choices, whether it takes a value, and the variable it reads),
and the page names nothing the parser does not have."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

import pytest

from tests.support.docs import DOCS
from worker.cli.parser import build_parser

CLI = DOCS / "cli.md"
GLOBAL = "global options"


@dataclass(frozen=True)
class Argument:
    choices: tuple[str, ...] | None
    takes_value: bool
    variable: str | None


def documented(text: str) -> dict[str, dict[str, Argument]]:
    """Section ("global options", or a command such as "model download") -> argument -> what
    its row says. An option is named by its flag, a positional by its metavar or its choices."""
    found: dict[str, dict[str, Argument]] = {}
    section: str | None = None
    for line in text.splitlines():
        heading = re.fullmatch(r"#{2,3} (?:`embed-worker ([a-z ]+)`|(Global options))", line)
        if heading:
            section = heading.group(1) or GLOBAL
            found[section] = {}
            continue
        if line.startswith("#"):
            section = None
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section is None or len(cells) != 3 or not re.fullmatch(r"`[^`]+`", cells[0]):
            continue
        words = cells[0].strip("`").split()
        choices = next((w for w in words if w.startswith("{")), None)
        name = words[0].strip("[]").removesuffix("...") if words[0] != choices else choices
        variable = cells[1].strip("`") if cells[1] != "-" else None
        found[section][name] = Argument(
            choices=tuple(choices.strip("{}").split(",")) if choices else None,
            takes_value=len(words) > 1 or not name.startswith("-"),
            variable=variable,
        )
    return found


def _name(action: argparse.Action) -> str:
    if action.option_strings:
        return action.option_strings[0]
    if action.choices:
        return "{" + ",".join(action.choices) + "}"
    return str(action.metavar or action.dest)


def _argument(action: argparse.Action) -> Argument:
    variable = re.search(r"\[((?:EMBED_[A-Z_]+)|DATABASE_URL)(?:=\w+)?\]", action.help or "")
    return Argument(
        choices=tuple(action.choices) if action.choices else None,
        takes_value=action.nargs != 0,
        variable=variable.group(1) if variable else None,
    )


def parsed() -> dict[str, dict[str, Argument]]:
    """The same, from the parser: each command's own arguments (the global ones are listed once)."""
    top = build_parser()
    global_dests = {a.dest for a in top._actions}
    found = {
        GLOBAL: {
            _name(a): _argument(a)
            for a in top._actions
            if a.dest != "help" and not isinstance(a, argparse._SubParsersAction)
        }
    }

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        if path:
            found[path] = {
                _name(a): _argument(a)
                for a in parser._actions
                if a.dest not in global_dests | {"help"}
                and not isinstance(a, argparse._SubParsersAction)
            }
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}".strip())

    walk(top, "")
    return found


def test_every_command_and_argument_is_documented_and_nothing_else() -> None:
    doc, code = documented(CLI.read_text()), parsed()
    assert set(doc) == set(code)
    for section, arguments in code.items():
        assert set(doc[section]) == set(arguments), section
        for name, argument in arguments.items():
            assert doc[section][name] == argument, (section, name)


def test_the_page_names_the_commands_that_take_the_model_options() -> None:
    text = CLI.read_text().replace("\n", " ")
    sentence = re.search(r"accepted after the command only by (.*?) \(the commands", text)
    assert sentence is not None
    named = set(re.findall(r"`([a-z]+)`", sentence.group(1)))
    top = build_parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    loading = {
        name
        for name, sub in commands.choices.items()
        if any("--model-path" in a.option_strings for a in sub._actions)
    }
    assert named == loading


@pytest.mark.parametrize(
    "change",
    [
        ("| `--once` | - |", "| `--once N` | - |"),  # a value the option does not take
        ("`--mode {auto,vector,hybrid}`", "`--mode {auto,vector}`"),  # a choice missing
        ("| `--queue NAME` | `EMBED_QUEUE` |", "| `--queue NAME` | - |"),  # its variable
        (
            "| `--json` | - | print JSON instead of a table |\n\n## `embed-worker f",
            "\n## `embed-worker f",
        ),
        ("| `--retry` |", "| `--fast` | - | an option the parser lacks |\n| `--retry` |"),
        ("## `embed-worker doctor`", "## `embed-worker doctors`"),
    ],
)
def test_the_comparison_sees_a_wrong_page(change: tuple[str, str]) -> None:
    before, after = change
    text = CLI.read_text()
    assert before in text
    doc = documented(text.replace(before, after, 1))
    code = parsed()
    differs = set(doc) != set(code) or any(
        doc.get(section) != arguments for section, arguments in code.items()
    )
    assert differs
