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


# Every numeric option, each out of its range (inf, nan, negative, too large): a usage error
# naming it, before anything connects. `migrate --lock-wait inf` was taken, and retried for ever.
EVERY_NUMERIC_OPTION = [
    *(
        (
            ["migrate", f"--lock-wait={value}"],
            "--lock-wait takes a finite number of seconds, from 0",
        )
        for value in ("inf", "nan", "-1", "1e300")
    ),
    *(
        (["status", f"--watch={value}"], "--watch takes a positive, finite number of seconds")
        for value in ("-inf", "0", "-2")
    ),
    *(
        (["plan", "docs", "--tokens-per-row", value], "--tokens-per-row takes a positive")
        for value in ("inf", "0")
    ),
    *(
        (["search", "docs", "q", f"{option}={value}"], f"{option} must be a number of at least 0")
        for option in ("--rrf-k", "--vector-weight", "--text-weight")
        for value in ("inf", "nan", "-1")
    ),
    (["search", "docs", "q", "-k=-1"], "-k must be an integer from 1 to 100"),
    (["search", "docs", "q", "-k", "101"], "-k must be an integer from 1 to 100"),
    (["search", "docs", "q", "--depth=-1"], "--depth must be an integer from 1 to 1000"),
    (["search", "docs", "q", "--rerank-depth", "0"], "--rerank-depth must be an integer from 1"),
    (["sweep", "--max-rows=-1"], "--max-rows must be from 1 to 2147483647"),
    (["failures", "--limit", "0"], "--limit must be from 1 to"),
    (["run", "--once", "--batch-size=-1"], "EMBED_BATCH_SIZE: must be at least 1"),
    (["run", "--once", "--vt-seconds=-1"], "EMBED_VT_SECONDS: must be at least 3"),
    (["run", "--once", "--max-attempts", "0"], "EMBED_MAX_ATTEMPTS: must be at least 1"),
    (["run", "--once", "--piece-tokens=-1"], "EMBED_PIECE_TOKENS: must be at least 1"),
    (["run", "--once", "--max-document-bytes=-1"], "EMBED_MAX_DOCUMENT_BYTES: must not be"),
    (["run", "--once", "--http-port", "65536"], "EMBED_HTTP_PORT: must be a TCP port"),
    (["run", "--once", "--threads=-1"], "EMBED_THREADS: must be at least 1"),
    # argparse's own: an integer option given inf
    (["sweep", "--max-rows", "inf"], "argument --max-rows: invalid int value: 'inf'"),
]


@pytest.mark.parametrize(
    ("argv", "message"), EVERY_NUMERIC_OPTION, ids=[" ".join(a) for a, _ in EVERY_NUMERIC_OPTION]
)
def test_every_numeric_option_out_of_its_range_is_a_usage_error(
    argv: list[str], message: str
) -> None:
    result = run_cli(*argv, env={"DATABASE_URL": NOWHERE})

    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "cannot connect" not in result.stderr


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
