"""Settings from the environment and flags; secrets out of logs."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker import config, conninfo, exceptions, exits
from worker.config import Settings
from worker.secret import Secret

WORKER = Path(__file__).resolve().parents[2] / "worker"


def test_defaults_and_environment() -> None:
    s = Settings.from_env(
        {"EMBED_BATCH_SIZE": "64", "EMBED_MODEL": "all-MiniLM-L6-v2", "EMBED_THREADS": ""}
    )
    assert (s.batch_size, s.model, s.threads, s.queue) == (
        64,
        "all-MiniLM-L6-v2",
        None,
        "embedding_jobs",
    )


def test_a_leader_waits_one_millisecond_for_company_by_default() -> None:
    """2 ms left the cores idler at 2 to 32 clients (1.00-1.06x at 1 ms, paired rounds); the
    batcher's own default is the setting's."""
    from worker.models.query_batch import DEFAULT_MAX_WAIT

    assert Settings.from_env({}).query_batch_wait_ms == 1.0 == DEFAULT_MAX_WAIT * 1000


def test_flags_win_over_the_environment() -> None:
    s = Settings.from_env({"EMBED_BATCH_SIZE": "64"}, batch_size=8, model=None)
    assert s.batch_size == 8 and s.model is None  # unset: the database's default model


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EMBED_BATCH_SIZE": "lots"}, "EMBED_BATCH_SIZE: expected a number"),
        ({"EMBED_BATCH_SIZE": "0"}, "EMBED_BATCH_SIZE: must be at least 1"),
        ({"EMBED_MODEL_VARIANT": "fp16"}, "EMBED_MODEL_VARIANT: expected fp32 or int8"),
        ({"EMBED_QUEUE": "Jobs; DROP"}, "EMBED_QUEUE"),
        ({"EMBED_LOG_FORMAT": "xml"}, "EMBED_LOG_FORMAT"),
        ({"EMBED_VT_SECONDS": "1"}, "EMBED_VT_SECONDS"),
        ({"EMBED_HTTP_PORT": "70000"}, "EMBED_HTTP_PORT"),
        ({"EMBED_HTTP_MAX_BODY": "0"}, "EMBED_HTTP_MAX_BODY: must be at least 1024"),
        ({"EMBED_HTTP_MAX_BODY": "-5"}, "EMBED_HTTP_MAX_BODY: must be at least 1024"),
        ({"EMBED_LOG_LEVEL": "5"}, "EMBED_LOG_LEVEL: expected DEBUG, INFO, WARNING, ERROR or"),
        ({"EMBED_GRACE_SECONDS": "inf"}, "EMBED_GRACE_SECONDS: expected a finite number"),
    ],
)
def test_invalid_settings_name_their_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("name", "lowest", "why"), config._AT_LEAST)
def test_every_floor_is_held_and_named(name: str, lowest: int, why: str) -> None:
    """Each setting with a floor refuses the value below it, naming its variable (and why the
    floor is where it is, where that is not plain), and takes the floor itself."""
    with pytest.raises(exceptions.ConfigError) as refused:
        Settings.from_env({Settings.env_of(name): str(lowest - 1)})
    expected = "must not be negative" if lowest == 0 else f"must be at least {lowest}"
    assert str(refused.value).startswith(f"{Settings.env_of(name)}: {expected}")
    assert why in str(refused.value)
    assert getattr(Settings.from_env({Settings.env_of(name): str(lowest)}), name) == lowest


@pytest.mark.parametrize("name", config._AT_MOST_INTEGER)
def test_every_ceiling_is_held_and_named(name: str) -> None:
    """Past a Postgres integer, a setting reached our SQL as a bigint no function takes
    (EMBED_BATCH_SIZE) or overflowed there (EMBED_LOCK_TIMEOUT_MS): refused, named, at once."""
    highest = config.PG_INTEGER_MAX
    with pytest.raises(exceptions.ConfigError, match=f"^{Settings.env_of(name)}: must be at most"):
        Settings.from_env({Settings.env_of(name): str(highest + 1)})
    assert getattr(Settings.from_env({Settings.env_of(name): str(highest)}), name) == highest


@pytest.mark.parametrize("name", config._POSITIVE)
def test_every_positive_setting_refuses_zero(name: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=f"^{Settings.env_of(name)}: must be positive"):
        Settings.from_env({Settings.env_of(name): "0"})


def test_database_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert conninfo.resolve_dsn("postgresql://x@h/db", {}) == "postgresql://x@h/db"
    assert conninfo.resolve_dsn(None, {"PGHOST": "db.internal"}) == ""
    assert conninfo.resolve_dsn(None, {}) == "postgresql://postgres@127.0.0.1:54329/embed"
    assert conninfo.resolve_dsn(None, {}, devdb_port=6000).endswith(":6000/embed")
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env({"DEVDB_PORT": "6000"}).dsn.endswith("@127.0.0.1:6000/embed")
    assert Settings.from_env({"DATABASE_URL": "postgresql://x@h/db"}).dsn == "postgresql://x@h/db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/x failed", "postgresql://app:***@db:5432/x failed"),
        ("postgres://app:p%40ss@db/x", "postgres://app:***@db/x"),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
        ("host=db password='a b c' user=app", "host=db password=*** user=app"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
    ],
)
def test_passwords_are_redacted(text: str, expected: str) -> None:
    assert conninfo.redact(text) == expected
    assert conninfo.redact(expected) == expected
    assert conninfo.describe("postgresql://app:s3cret@db:5433/x") == "db:5433/x"


def test_a_redacted_hint_keeps_its_quotes_through_the_log_filter() -> None:
    """A hint redacts its DATABASE_URL and the log filter redacts the line again: the second
    pass took `***'` for a password and ate the quote that closes it, so the hint could not be
    pasted."""
    import logging
    import shlex

    from worker import logs
    from worker.cli import hints

    hint = hints.command("status", "host=127.0.0.1 dbname=x password=s3cretPW")
    assert "DATABASE_URL='host=127.0.0.1 dbname=x password=***' " in hint
    record = logging.LogRecord("worker.cli", logging.INFO, "", 0, "then see `%s`", (hint,), None)
    logs.RedactingFilter().filter(record)
    assert record.getMessage() == f"then see `{hint}`"
    assert shlex.split(hint)[0] == "DATABASE_URL=host=127.0.0.1 dbname=x password=***"


# What a connection string's password and the text around a redacted one are made of.
_PIECES = ["password=", "PASSWORD = ", "postgresql://u:", "***", "pw", *"'\"\\ \n@"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12))
def test_redaction_is_idempotent(pieces: list[str]) -> None:
    """What redact() returns it returns unchanged: a line redacted twice (a hint, then the log
    filter) reads as redacted once."""
    once = conninfo.redact("".join(pieces))
    assert conninfo.redact(once) == once


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("0", False), ("Off", False), ("yes", True)]
)
def test_pull_is_a_boolean(raw: str, expected: bool) -> None:
    env = {"EMBED_PULL": raw, "EMBED_HTTP_PORT": "8080"}
    assert Settings.from_env(env).pull is expected


def test_pull_rejects_what_is_not_a_boolean() -> None:
    with pytest.raises(
        exceptions.ConfigError, match="EMBED_PULL: expected true or false, got 'maybe'"
    ):
        Settings.from_env({"EMBED_PULL": "maybe"})


def test_push_only_needs_the_http_server() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"EMBED_PULL: false .* needs EMBED_HTTP_PORT"):
        Settings.from_env({"EMBED_PULL": "false"})


def test_run_once_cannot_be_push_only(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli import main

    assert main.main(["run", "--once", "--no-pull", "--http-port", "0"]) == exits.USAGE
    assert "run --once drains the queue" in capsys.readouterr().err


def test_listen_accepts_auto_true_false_only() -> None:
    assert Settings.from_env({}).listen == "auto"
    assert Settings.from_env({"EMBED_LISTEN": "false"}).listen == "false"
    with pytest.raises(exceptions.ConfigError, match="EMBED_LISTEN: expected auto, true or false"):
        Settings.from_env({"EMBED_LISTEN": "sometimes"})


# Environment variables that others define and read; we only look at them, where they live.
READ_ELSEWHERE = {
    "worker/conninfo.py": "libpq's PG* variables: which database an empty conninfo means",
    "worker/process/systemd.py": "NOTIFY_SOCKET: systemd's notification protocol",
}


# The settings (config.py) and how they are read (environment.py).
SETTINGS_MODULES = ("worker/config.py", "worker/environment.py")


def test_only_the_settings_read_the_environment() -> None:
    """Every variable of ours is read by worker/config.py, once; no module reads os.environ
    on its own, and nothing writes to it (flags are applied to the Settings)."""
    found = set()
    for path in WORKER.rglob("*.py"):
        name = path.relative_to(WORKER.parent).as_posix()
        if name not in SETTINGS_MODULES and re.search(r"os\.environ|getenv", path.read_text()):
            found.add(name)
    assert found == set(READ_ELSEWHERE)


def test_model_location_and_download_switches_are_settings(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "EMBED_MODEL_PATH": f"models:{tmp_path}::~/m",
            "EMBED_CACHE_DIR": str(tmp_path / "cache"),
            "EMBED_THREADS": "3",
            "HF_ENDPOINT": "http://mirror.internal",
        }
    )
    location = s.model_location
    assert location.path == (
        Path(os.path.abspath("models")),
        tmp_path,
        Path("~/m").expanduser(),
    )
    assert location.cache == tmp_path / "cache"
    assert location.search_dirs() == [*location.path, tmp_path / "cache"]
    assert s.threads == 3
    assert s.downloads.endpoint == "http://mirror.internal"
    assert s.downloads.off_by is None
    assert Settings.from_env({}).model_location.cache == Path("~/.cache/embed-worker").expanduser()
    assert Settings.from_env({"EMBED_OFFLINE": "1"}).downloads.off_by == "EMBED_OFFLINE"
    assert Settings.from_env({"HF_HUB_OFFLINE": "1"}).downloads.off_by == "HF_HUB_OFFLINE"
    with pytest.raises(exceptions.ConfigError, match="EMBED_THREADS: must be at least 1"):
        Settings.from_env({"EMBED_THREADS": "0"})


def test_model_flags_reach_the_settings_not_the_environment(tmp_path: Path) -> None:
    from worker.cli import main, parser

    before = dict(os.environ)
    args = parser.build_parser().parse_args(
        ["--model-path", str(tmp_path), "model", "list", "--cache-dir", str(tmp_path / "c")]
    )
    s = main.settings_from(args)
    assert s.model_location.path == (tmp_path,)
    assert s.model_location.cache == tmp_path / "c"
    assert dict(os.environ) == before


# --- API keys of remote models (docs/providers.md#api-keys) ---------------------------------------
FILE_KEY = "sk-file-KEYfromTHEsecret0123456789"
ENV_KEY = "sk-env-KEYfromTHEenvironment98765"
HF_KEY = "hf_envTOKENabcdefghijklmnopqrstu"


def keys_in(directory: Path, **env: str) -> Settings:
    return Settings.from_env({"EMBED_API_KEY_DIR": str(directory), **env})


def test_a_key_file_comes_before_the_providers_variables(tmp_path: Path) -> None:
    """The file named after the credential in EMBED_API_KEY_DIR (a Kubernetes secret's
    trailing newline stripped), then OPENAI_API_KEY or HF_TOKEN; another credential name only
    from its file."""
    (tmp_path / "openai").write_text(FILE_KEY + "\n")
    (tmp_path / "huggingface").write_text("hf_fileTOKEN0123456789abcdef\n")
    (tmp_path / "azure").write_text(" sk-azure-0123456789abcdef \n")
    s = keys_in(tmp_path, OPENAI_API_KEY=ENV_KEY, HF_TOKEN=HF_KEY)
    key, where = s.api_key("openai")
    assert key is not None and key.reveal() == FILE_KEY and where == f"file {tmp_path}/openai"
    key, where = s.api_key("huggingface")
    assert key is not None and key.reveal() == "hf_fileTOKEN0123456789abcdef"
    key, _ = s.api_key("azure")
    assert key is not None and key.reveal() == "sk-azure-0123456789abcdef"
    # No file (or an empty one): the provider's variable.
    (tmp_path / "openai").unlink()
    (tmp_path / "huggingface").write_text("\n")
    assert s.api_key("openai")[1] == "OPENAI_API_KEY"
    key, where = s.api_key("huggingface")
    assert key is not None and key.reveal() == HF_KEY and where == "HF_TOKEN"
    # Nothing anywhere: where it was looked for, to tell the user.
    assert keys_in(tmp_path).api_key("openai") == (None, f"{tmp_path}/openai or OPENAI_API_KEY")
    assert keys_in(tmp_path).api_key("other") == (None, f"{tmp_path}/other")
    assert Settings.from_env({}).api_key("other") == (
        None,
        "EMBED_API_KEY_DIR (unset) for 'other'",
    )


def test_a_key_file_is_read_on_each_use(tmp_path: Path) -> None:
    """A rotated secret (Kubernetes replaces the mounted file) is used from the next request
    on: Settings.api_key, which RemoteModel asks before every request, reads the file each
    time."""
    s = keys_in(tmp_path)
    (tmp_path / "openai").write_text(FILE_KEY)
    assert s.api_key("openai")[0] == Secret(FILE_KEY)
    (tmp_path / "openai").write_text("sk-rotated-0123456789abcdef")
    assert s.api_key("openai")[0] == Secret("sk-rotated-0123456789abcdef")


def test_a_key_file_that_cannot_be_read_is_a_clear_error_without_the_key(tmp_path: Path) -> None:
    (tmp_path / "openai").symlink_to(tmp_path / "openai")  # unreadable even by root (ELOOP)
    with pytest.raises(exceptions.ConfigError) as raised:
        keys_in(tmp_path, OPENAI_API_KEY=ENV_KEY).api_key("openai")
    assert str(raised.value) == (
        f"EMBED_API_KEY_DIR: cannot read {tmp_path}/openai: Too many levels of symbolic links"
    )
    (tmp_path / "openai").unlink()
    (tmp_path / "openai").write_bytes(b"\xff" + FILE_KEY.encode())
    with pytest.raises(exceptions.ConfigError) as raised:
        keys_in(tmp_path).api_key("openai")
    assert str(raised.value) == f"EMBED_API_KEY_DIR: {tmp_path}/openai is not UTF-8 text (a key is)"
    assert raised.value.__cause__ is None and raised.value.__context__ is None
    assert FILE_KEY not in repr(raised.value) + str(raised.value)
    # A directory where a file is expected is no key (as a missing file), not an error.
    (tmp_path / "openai").unlink()
    (tmp_path / "openai").mkdir()
    assert keys_in(tmp_path, OPENAI_API_KEY=ENV_KEY).api_key("openai")[1] == "OPENAI_API_KEY"


def test_a_group_of_settings_is_read_by_its_prefix() -> None:
    """The HTTP limits and the parse budgets are the settings of their prefix, as set."""
    from worker.http.lanes import Limits
    from worker.pipeline.parsing.budgets import Budgets

    settings = Settings.from_env(
        {"EMBED_HTTP_MAX_WAITING_CONNECTIONS": "7", "EMBED_PARSE_CPU_SECONDS": "3"}
    )
    limits = settings.group(Limits, "http_")
    assert limits.max_waiting_connections == 7
    assert limits.max_body == settings.http_max_body
    budgets = settings.group(Budgets, "parse_")
    assert (budgets.cpu_seconds, budgets.memory_mb) == (3, settings.parse_memory_mb)
    with pytest.raises(AttributeError, match="no_such_timeout_seconds"):
        settings.group(Budgets, "no_such_")


@pytest.mark.parametrize(("name", "highest"), config._AT_MOST_SECONDS)
def test_every_seconds_setting_has_a_ceiling(name: str, highest: int) -> None:
    """A huge, finite number of seconds (1e300) passed every check, then overflowed where it
    was waited for (threading.Event.wait, select, a socket's timeout: OverflowError, a thread
    gone) or sent to Postgres as milliseconds: refused, named, at once."""
    env = Settings.env_of(name)
    with pytest.raises(exceptions.ConfigError, match=f"^{env}: must be at most {highest} seconds"):
        Settings.from_env({env: "1e300"})
    assert getattr(Settings.from_env({env: str(highest)}), name) == highest


def test_every_setting_in_seconds_has_its_ceiling() -> None:
    """A new setting in seconds joins _AT_MOST_SECONDS (or the integers' ceiling)."""
    bounded = {name for name, _ in config._AT_MOST_SECONDS} | set(config._AT_MOST_INTEGER)
    in_seconds = {f.name for f in dataclasses.fields(Settings) if f.name.endswith("_seconds")}
    assert in_seconds - bounded == set()
