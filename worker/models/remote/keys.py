"""A remote model's API key: fetched before each request (a rotated secret is sent from the next
one on), refused when it may not be sent, and kept out of every message we keep.

The key is checked when read (worker/config.py: checked_key: one line of printable ASCII), so a
bad one defers its model's targets with an error naming the variable or file. What reaches this
module is a Secret; its text leaves it only in the Authorization header.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from worker import exceptions
from worker.config import Secret
from worker.models.remote.spec import RemoteSpec

# Where the key of a credential name is, and where it was looked for (Settings.api_key).
ApiKey = Callable[[str], tuple[Secret | None, str]]

# Anything shaped like a provider key (OpenAI sk-..., Hugging Face hf_..., generic bearer
# tokens of 20+ characters after a key-ish word) is masked in messages, beside the key itself.
_KEYLIKE = re.compile(r"\b(sk|hf|pk|rk|key|token)[-_][A-Za-z0-9_\-\*\.]{6,}", re.IGNORECASE)


def key_for(spec: RemoteSpec, api_key: ApiKey) -> Secret | None:
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
