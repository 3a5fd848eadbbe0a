"""The CLI's human output: a tenant's text in a table, a record or a report is shown, never
acted on by the terminal (worker/cli/output.py)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from tests.support.process import run_cli
from worker import escapes
from worker.cli import output

HOSTILE = "docs\x1b[2J\u202eexe\nfake line"


def test_table_cells_are_shown_and_columns_line_up() -> None:
    lines = output.table_lines(["target", "n"], [[HOSTILE, "1"], ["short", "22"]])
    assert all(line.isprintable() for line in lines)
    assert lines[2] == "docs\\x1b[2J\\u202eexe\\nfake line  1"
    assert lines[3].index("22") == lines[2].rindex("1") == lines[0].rindex("n")


def _columns_at(line: str) -> list[int]:
    """Where each cell after the first starts on the terminal: the display columns before it
    (east_asian_width W and F take two, combining marks none: what wcwidth() says of them)."""
    starts, at = [], 0
    for i, c in enumerate(line):
        if c != " " and i > 1 and line[i - 2 : i] == "  ":
            starts.append(at)
        wide = unicodedata.east_asian_width(c) in ("W", "F")
        at += 0 if unicodedata.combining(c) else 2 if wide else 1
    return starts


def test_columns_line_up_on_the_terminal_with_wide_and_combining_characters() -> None:
    names = ["文書テーブル", "docs_😀🎉", "cafe\u0301s", "plain"]
    lines = output.table_lines(["target", "n", "m"], [[n, "1", "x"] for n in names])
    assert len({tuple(_columns_at(line)) for line in lines[:1] + lines[2:]}) == 1, lines
    # the rule under the header is as wide as the widest name is on the terminal: 12 columns
    assert lines[1].split("  ")[0] == "-" * 12


def test_records_and_reports_are_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    output.print_fields([("target", HOSTILE)])
    output.print_lines(["warn  search: may not read " + HOSTILE])
    output.say("database " + HOSTILE)
    printed = capsys.readouterr()
    assert printed.out.count("\n") == 2 and printed.err.count("\n") == 1
    assert all(line.isprintable() for line in (printed.out + printed.err).splitlines())


def test_sql_for_an_operator_keeps_its_names_when_shown() -> None:
    """A quoted identifier holding what a terminal acts on is spelled with Unicode escapes (the
    same name to Postgres: tests/integration/test_cli.py runs one); others are left as they are."""
    grant = 'GRANT SELECT ON public."no""tes\x1b[2J\\x", plain, "Mixed" TO "app\u202e";'
    shown = output.visible_sql(grant)
    assert shown == (
        'GRANT SELECT ON public.U&"no""tes\\001b[2J\\\\x", plain, "Mixed" TO U&"app\\202e";'
    )
    assert escapes.visible(shown) == shown


def test_a_model_that_fails_to_load_is_logged_once(tmp_path: Path) -> None:
    """`embed` (and `search`) with a model that cannot load: one log line for the one failure
    (the load's own, then the command's catch-all said it again)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{}")  # no model.onnx

    result = run_cli("embed", "--model", str(broken), "hello")

    assert result.returncode == 1, result.stderr
    said = [line for line in result.stderr.splitlines() if "is not a model directory" in line]
    assert len(said) == 1, result.stderr
