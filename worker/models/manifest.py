"""The manifest of a downloaded model directory (`embed-worker.json`): the repository and
revision it came from, and each verified file's sha256 and size.

`download()` writes it; `model download` checks the files against it (`damaged(deep=True)`:
sizes, then sha256) and fetches a damaged file again; `model list` checks the sizes alone
(`damaged(deep=False)`: no file is read). A manifest written before sizes were recorded is
checked by sha256 alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from worker.models.catalog import ModelSpec

MANIFEST = "embed-worker.json"


@dataclass
class Manifest:
    """What the manifest of one model directory says for the revision asked for."""

    files: dict[str, str] = field(default_factory=dict)  # path -> sha256
    sizes: dict[str, int] = field(default_factory=dict)  # path -> bytes (newer manifests)

    @classmethod
    def read(cls, dest: Path, spec: ModelSpec) -> Manifest:
        """The files recorded for `spec`'s revision that are still on disk (none when the
        directory holds another revision, or no manifest)."""
        try:
            data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None  # none, or unreadable: every file is fetched again
        if not isinstance(data, dict):
            return cls()
        if data.get("repo_id") != spec.repo_id or data.get("revision") != spec.revision:
            return cls()
        files, sizes = data.get("files", {}), data.get("sizes", {})
        if not isinstance(files, dict):
            return cls()
        kept = {path: str(digest) for path, digest in files.items() if (dest / path).is_file()}
        sizes = sizes if isinstance(sizes, dict) else {}
        return cls(
            files=kept,
            sizes={p: n for p, n in sizes.items() if p in kept and isinstance(n, int)},
        )

    def record(self, path: str, sha256: str, size: int) -> None:
        self.files[path] = sha256
        self.sizes[path] = size

    def forget(self, path: str) -> None:
        self.files.pop(path, None)
        self.sizes.pop(path, None)

    def write(self, directory: Path, spec: ModelSpec) -> None:
        data = {
            "repo_id": spec.repo_id,
            "revision": spec.revision,
            "files": self.files,
            "sizes": self.sizes,
        }
        (directory / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def damaged(self, dest: Path, *, deep: bool) -> list[str]:
        """The recorded files whose size differs from the manifest's, and with `deep` also
        those whose sha256 does (each file read once: a size already wrong is not hashed)."""
        found = []
        for path, digest in sorted(self.files.items()):
            local = dest / path
            size = self.sizes.get(path)
            try:
                wrong_size = size is not None and local.stat().st_size != size
                if wrong_size or (deep and sha256_of(local) != digest):
                    found.append(path)
            except OSError:
                found.append(path)
        return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
