"""TEMPORARY stand-in until the model registry lands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker import exceptions


def list_models() -> list[Any]:
    return []


def download(name: str, *, variant: str = "fp32") -> Path:
    raise exceptions.DownloadError(f"downloading {name} ({variant}) is not implemented yet")
