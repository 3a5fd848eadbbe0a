"""A remote model's API key: fetched before each request (a rotated secret is sent from the next
one on), refused when it may not be sent, and kept out of every message we keep.

The key is checked when read (worker/secret.py: checked_key: one line of printable ASCII), so a
bad one defers its model's targets with an error naming the variable or file. What reaches this
module is a Secret; its text leaves it only in the Authorization header.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from worker import exceptions
from worker.models.remote import providers, rerank_providers
from worker.secret import Secret, checked_key, one_line

logger = logging.getLogger(__name__)

# Where the key of a credential name is, and where it was looked for (Settings.api_key).
ApiKey = Callable[[str], tuple[Secret | None, str]]

KEY_DIR = "EMBED_API_KEY_DIR"  # a directory of key files, one per credential name
# The providers' own variables, by the credential name a model row gives by default (its kind).
CREDENTIAL_VARIABLES = {p.name: p.credential_variable for p in providers.PROVIDERS.values()}
# The rerank providers' variables, by the credential name a reranker row gives by default
# (rerank_providers.py: cohere, jina, voyage; text-embeddings-inference has none).
RERANK_CREDENTIAL_VARIABLES = {
    k.name: k.credential_variable
    for k in rerank_providers.KINDS.values()
    if k.credential_variable is not None
}
OPENAI_KEY = providers.OpenAI.credential_variable  # the Settings' fields of these
HF_KEY = providers.HuggingFace.credential_variable
COHERE_KEY = RERANK_CREDENTIAL_VARIABLES[rerank_providers.Cohere.name]
JINA_KEY = RERANK_CREDENTIAL_VARIABLES[rerank_providers.Jina.name]
VOYAGE_KEY = RERANK_CREDENTIAL_VARIABLES[rerank_providers.Voyage.name]


def variable_of(credential: str) -> str | None:
    """The provider's own variable that holds the key of `credential`, if it has one."""
    return CREDENTIAL_VARIABLES.get(credential) or RERANK_CREDENTIAL_VARIABLES.get(credential)


def key_variables() -> list[str]:
    """Every provider's key variable (the Settings read them all)."""
    return [*CREDENTIAL_VARIABLES.values(), *RERANK_CREDENTIAL_VARIABLES.values()]


class Keyed(Protocol):
    """What sends a key (a RemoteSpec, a RerankerSpec): its credential's name, whether its
    endpoint may carry the key, and how it is named in messages."""

    @property
    def credential(self) -> str | None: ...

    def plain_http_problem(self) -> str | None: ...

    def describe(self) -> str: ...


def find_key(
    credential: str, *, key_dir: str | None, variables: Mapping[str, Secret | None]
) -> tuple[Secret | None, str]:
    """The key of `credential` and where it came from (for doctor: a file or a variable's name,
    never the value): the file `credential` in `key_dir` (EMBED_API_KEY_DIR), read on each call
    so that a rotated secret is picked up; else the provider's variable (CREDENTIAL_VARIABLES,
    its value in `variables`). (None, where it was looked for) when there is none."""
    looked = []
    if key_dir and credential not in (".", ".."):
        path = os.path.join(os.path.expanduser(key_dir), credential)
        looked.append(path)
        value, problem = "", None
        try:
            with open(path, encoding="utf-8", newline="") as f:
                value = one_line(f.read())
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        except OSError as exc:  # unreadable: say so, without the content
            problem = f"cannot read {path}: {exc.strerror}"
        except UnicodeDecodeError:
            problem = f"{path} is not UTF-8 text (a key is)"
        if problem is not None:
            # Raised out here: a UnicodeDecodeError holds the bytes read, and an exception
            # raised in its except block would keep it as __context__ (`from None` only hides
            # it from tracebacks).
            raise exceptions.ConfigError(f"{KEY_DIR}: {problem}")
        if value:
            return checked_key(value, f"{KEY_DIR}: {path}"), f"file {path}"
    variable = variable_of(credential)
    if variable is not None:
        looked.append(variable)
        secret = variables.get(variable)
        if secret is not None and secret.reveal():
            return checked_key(secret.reveal(), variable), variable
    return None, " or ".join(looked) or f"{KEY_DIR} (unset) for {credential!r}"


# Anything shaped like a provider key (each kind's shape, and generic bearer tokens after a
# key-ish word) is masked in messages, beside the key itself.
_KEYLIKE = re.compile(
    "|".join(
        [
            r"\b(sk|hf|pk|rk|key|token)[-_][A-Za-z0-9_\-\*\.]{6,}",
            *providers.key_patterns(),
            *rerank_providers.key_patterns(),
        ]
    ),
    re.IGNORECASE,
)


def key_for(spec: Keyed, api_key: ApiKey) -> Secret | None:
    """The key to send to `spec`'s endpoint (None: the model needs none), or ProviderRefused:
    the target waits until the key or the registration is fixed."""
    if spec.credential is None:
        return None
    problem = spec.plain_http_problem()
    if problem is not None:  # checked before the key is even read
        raise exceptions.ProviderRefused(f"{spec.describe()}: {problem}")
    try:
        key, where = api_key(spec.credential)
    except exceptions.ConfigError as exc:  # unreadable or malformed: its text names no key
        message = str(exc)
    else:
        if key is not None:
            return key
        message = f"no API key for credential {spec.credential!r}: set {where} (docs/providers.md)"
    # Raised here, outside the except block: nothing is chained to it.
    raise exceptions.ProviderRefused(f"{spec.describe()}: {message}")


class PlainHttpRefusals:
    """Registrations whose key may not go to their endpoint (plain http beyond loopback: one
    made by hand, or before register_model() refused them), refused each time and logged once,
    however often they are asked for."""

    def __init__(self) -> None:
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def check(self, spec: Keyed, what: str) -> None:
        """ProviderRefused, saying `what` ("remote model m") and why, when `spec` may not send
        its key where it says; nothing is sent then."""
        problem = spec.plain_http_problem()
        if problem is None:
            return
        message = f"{what}: {problem}"
        with self._lock:
            new = message not in self._logged
            self._logged.add(message)
        if new:
            logger.error("%s", message)
        raise exceptions.ProviderRefused(message)


def header(key: Secret) -> str:
    return f"Bearer {key.reveal()}"


def clean(message: str, key: Secret | None) -> str:
    """The provider's message without the key (whole or in part) and clipped."""
    if key is not None:
        secret = key.reveal()
        if secret:
            message = message.replace(secret, "***")
            for part in (secret[:8], secret[-8:]):  # "sk-abc...xyz" style partial echoes
                if len(part) >= 6:
                    message = message.replace(part, "***")
    message = _KEYLIKE.sub("***", message)
    message = " ".join(message.split())
    return message if len(message) <= 300 else message[:297] + "..."
