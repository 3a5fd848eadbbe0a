"""Commands to suggest in messages, spelled so that they work when pasted as printed.

A user who ran `make demo` has no `embed-worker` on PATH and no DATABASE_URL in the shell: a
hint names the executable by its full path (unless PATH finds this very one) and carries the
database it talked to (password redacted).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from worker import conninfo
from worker.config import Settings
from worker.models import catalog
from worker.models.files import DEFAULT_CACHE_DIR


def executable() -> str:
    """How to run this embed-worker from any shell."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    on_path = shutil.which("embed-worker")
    if script is not None and script.name == "embed-worker":
        if on_path and Path(on_path).resolve() == script.resolve():
            return "embed-worker"
        return shlex.quote(str(script.resolve()))
    beside = Path(sys.executable).with_name("embed-worker")  # the venv's console script
    if beside.is_file() and os.access(beside, os.X_OK):
        if on_path and Path(on_path).resolve() == beside.resolve():
            return "embed-worker"
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m worker"


def command(arguments: str, dsn: str | None, env: Mapping[str, str] | None = None) -> str:
    """`embed-worker ARGUMENTS`, runnable as printed, for the database `dsn` ("" = PG* vars),
    with the settings `env` (what the command needs of this process's configuration, e.g. the
    directory a model was found in) set in front of it."""
    prefix = ""
    if dsn:  # even when DATABASE_URL is set here: `make` may have set it, not the user's shell
        prefix = f"DATABASE_URL={shlex.quote(conninfo.redact(dsn))} "
    for name, value in (env or {}).items():
        prefix += f"{name}={shlex.quote(value)} "
    return f"{prefix}{executable()} {arguments}"


# --- a missing model -----------------------------------------------------------------------------
EXAMPLE_MODEL_DIR = "/srv/models"


def model_download(name: str, settings: Settings) -> str:
    """`embed-worker model download NAME --variant V`, fetching what this configuration loads
    into the cache it reads (named when it is not the default)."""
    arguments = f"model download {shlex.quote(name)} --variant {settings.model_variant}"
    if settings.cache_dir != DEFAULT_CACHE_DIR:
        arguments += f" --cache-dir {shlex.quote(os.fspath(settings.model_location.cache))}"
    # huggingface_hub itself refuses every request while HF_HUB_OFFLINE is on.
    return ("HF_HUB_OFFLINE=0 " if settings.hf_hub_offline else "") + command(arguments, None)


def model_files(name: str, settings: Settings) -> str:
    """What a model directory for `name` must hold for this configuration's variant."""
    spec = catalog.REGISTRY.get(name)
    if spec is None:
        weights = "model.onnx (or onnx/model.onnx)"
        if settings.model_variant == "int8":
            weights += ", and model_quantized.onnx unless it is quantized on first use"
        return f"tokenizer.json and {weights}"
    wanted = [f.path for f in spec.files_for(settings.model_variant) if not f.optional]
    weights = " and ".join(p for p in wanted if p.endswith(".onnx"))
    others = [p for p in wanted if not p.endswith(".onnx") and p != "tokenizer.json"]
    also = f", with {', '.join(others)}" if others else ""
    return (
        f"tokenizer.json and {weights}{also} (the files of "
        f"https://huggingface.co/{spec.repo_id} at revision {spec.revision})"
    )


def model_layout(name: str, settings: Settings, directory: Path) -> str:
    return f"the directory {directory}/ must hold {model_files(name, settings)}"


def model_on_path(name: str, settings: Settings) -> str:
    """Where to put a model directory by hand (offline use): under EMBED_MODEL_PATH."""
    dirs = settings.model_location.path
    base = os.fspath(dirs[0]) if dirs else EXAMPLE_MODEL_DIR
    directory = f"{base}/{name}/ holding {model_files(name, settings)}"
    if dirs:
        return f"for offline use, put {directory} ({base} is on EMBED_MODEL_PATH)"
    return f"for offline use, create {directory}, and set EMBED_MODEL_PATH={base}"
