"""Settings read from environment variables: a frozen dataclass whose every field names its
variable (field metadata `env`), read from an environment with CLI flags applied over it, and
checked once, with errors that name the variable. worker/config.py's Settings is the one such
class; what its fields are and the bounds they keep live there."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Self

from worker import exceptions
from worker.secret import Secret

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class FromEnvironment:
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read from `env` (default: os.environ); `overrides` (CLI flags) win when not None."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"], "").strip()
            if raw:
                values[f.name] = parse(f.metadata["env"], str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values).validated()

    def problems(self) -> Iterator[tuple[str, str]]:
        """Each field out of its bounds, and what is wrong with it (none here)."""
        return iter(())

    def validated(self) -> Self:
        """These settings, or ConfigError naming the first variable out of its bounds."""
        found = next(self.problems(), None)
        if found is not None:
            name, problem = found
            raise exceptions.ConfigError(f"{self.env_of(name)}: {problem}")
        return self

    @classmethod
    def env_of(cls, name: str) -> str:
        """The environment variable of field `name`."""
        return str(next(f.metadata["env"] for f in fields(cls) if f.name == name))

    def with_overrides(self, **overrides: Any) -> Self:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None}).validated()


def is_true(raw: str) -> bool:
    """Whether `raw` is a value that turns a boolean setting on (1, true, yes, on)."""
    return raw.strip().lower() in _TRUE


def parse(env: str, type_name: str, raw: str) -> Any:
    """The value of variable `env` (`raw`, as set) for a field of type `type_name`."""
    if type_name.startswith("Secret"):
        return Secret(raw)
    if type_name == "bool":
        if raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise exceptions.ConfigError(f"{env}: expected true or false, got {raw!r}")
    try:
        if type_name.startswith("int"):
            return int(raw)
        if type_name.startswith("float"):
            value = float(raw)
            if not math.isfinite(value):  # nan passed every bound (nan <= 0 is false)
                raise exceptions.ConfigError(f"{env}: expected a finite number, got {raw!r}")
            return value
    except ValueError:
        raise exceptions.ConfigError(f"{env}: expected a number, got {raw!r}") from None
    return raw
