"""Options and settings out of their bounds: exit 2 and one line naming the option or variable,
before anything connects; never a traceback (exit 1, which the systemd unit restarts on, so a
typo looped), a raw SQL error, or a busy loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.process import run_cli

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"  # a check that fires late fails to connect: 1


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--log-level", "bogus", "status"], {}, "argument --log-level: invalid choice: 'BOGUS'"),
        (["status"], {"EMBED_LOG_LEVEL": "5"}, "EMBED_LOG_LEVEL: expected DEBUG, INFO, WARNING"),
        (["sweep", "--max-rows", "99999999999"], {}, "--max-rows must be from 1 to 2147483647"),
        (["status"], {"EMBED_LOCK_TIMEOUT_MS": "99999999999"}, "EMBED_LOCK_TIMEOUT_MS: must be"),
        (
            ["run", "--once", "--batch-size", "99999999999"],
            {},
            "EMBED_BATCH_SIZE: must be at most 2147483647",
        ),
        (["plan", "docs", "--tokens-per-row", "-3"], {}, "--tokens-per-row takes a positive"),
        (["plan", "docs", "--tokens-per-row", "nan"], {}, "--tokens-per-row takes a positive"),
        (["status", "--watch", "nan"], {}, "--watch takes a positive, finite number of seconds"),
        (["status", "--watch", "inf"], {}, "--watch takes a positive, finite number of seconds"),
        (["status"], {"EMBED_POLL_SECONDS": "nan"}, "EMBED_POLL_SECONDS: expected a finite"),
        (["status", "--watch", "1e300"], {}, "--watch takes a positive, finite number of seconds,"),
        (
            ["status"],
            {"EMBED_POLL_SECONDS": "1e300"},
            "EMBED_POLL_SECONDS: must be at most 2147483",
        ),
        (["run"], {"EMBED_HTTP_TIMEOUT_SECONDS": "1e300"}, "EMBED_HTTP_TIMEOUT_SECONDS: must be"),
        (["failures", "--limit", "9" * 20], {}, "--limit must be from 1 to"),
        (["failures", "--id", "9" * 20, "--retry"], {}, "--id must be at most 9223372036854775807"),
    ],
)
def test_a_value_out_of_bounds_is_a_usage_error_naming_it(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(*argv, env={"DATABASE_URL": NOWHERE, **env})

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_any_case_of_a_log_level_is_taken() -> None:
    result = run_cli("deploy", "env", env={"EMBED_LOG_LEVEL": "debug"})
    assert result.returncode == 0, result.stderr


def test_deploy_into_a_file_says_it_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "notadir").write_text("mine")
    for target in (tmp_path / "notadir", tmp_path / "notadir" / "below"):
        result = run_cli("deploy", "kubernetes", str(target))

        assert result.returncode == 2, result.stderr
        assert f"{target} is not a directory" in result.stderr
        assert "Traceback" not in result.stderr
    assert (tmp_path / "notadir").read_text() == "mine"
