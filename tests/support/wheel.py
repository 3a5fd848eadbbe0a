"""The wheel as a user gets it: built from this checkout the way `make dist` builds it, and
installed with its dependencies into a fresh virtual environment outside the checkout.

The dependencies come from a wheelhouse beside the test run's own environment
(`<.venv>/wheelhouse`, gone with `make clean`), installed with `pip install --no-index`: the
first run fills it from the package index (`pip download`, about 60 MB), pinned to the versions
installed in the test run's environment so that the wheel runs what the rest of the suite ran;
later runs need no network. pip's own HTTP cache is no help here: the index's proxy answers are
not cacheable on these machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tests.support.cluster import REPO

DISTRIBUTION = "embed-worker"
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


def version() -> str:
    """The version pyproject.toml declares: the only place it is written."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def build(outdir: Path, kind: str = "wheel") -> Path:
    """Builds the wheel (or, `kind` "sdist", the source distribution) of this checkout into
    `outdir` (as `make dist` does: no isolation, the backend from the test run's environment)
    and returns its path."""
    built = subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(outdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    pattern = "embed_worker-*-py3-none-any.whl" if kind == "wheel" else "embed_worker-*.tar.gz"
    (found,) = outdir.glob(pattern)
    return found


def requirements(wheel: Path) -> list[str]:
    """The wheel's own dependencies (without extras), as its metadata declares them."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return [
        line.partition(":")[2].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]


def _pins() -> str:
    """Every distribution installed in the test run's environment, pinned (pip constraints)."""
    pins = {
        dist.metadata["Name"]: dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != DISTRIBUTION
    }
    return "".join(f"{name}=={pinned}\n" for name, pinned in sorted(pins.items()))


def _pip_env(*, index: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if not index:  # nothing from the user's pip configuration: only the wheelhouse
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    return env


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def python(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "python"), *argv],
            cwd=cwd,
            env=clean_env(self),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def clean_env(venv: Venv, **extra: str) -> dict[str, str]:
    """A shell of someone who installed the wheel: the venv's bin first on PATH, nothing of
    the checkout or of our settings."""
    keep = {"HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = f"{venv.bin}{os.pathsep}/usr/local/bin:/usr/bin:/bin"
    return {**env, **extra}


def install(wheel: Path, root: Path, *, dependencies_of: Path | None = None) -> Venv:
    """A fresh virtual environment at `root` with the wheel (or an sdist, built by pip in
    isolation with the backend from the wheelhouse) and its dependencies installed from the
    wheelhouse alone. `dependencies_of`: the wheel whose dependencies the wheelhouse holds
    (an sdist's own metadata is not read here)."""
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run(
        [base, "-m", "venv", str(root)], capture_output=True, text=True, timeout=300, check=False
    )
    assert made.returncode == 0, made.stderr
    venv = Venv(root)
    pip = [str(venv.bin / "python"), "-m", "pip", "install", "-q", "--no-index"]
    installed = subprocess.run(
        [*pip, "--find-links", str(wheelhouse(dependencies_of or wheel)), str(wheel)],
        capture_output=True,
        text=True,
        timeout=900,
        env=_pip_env(index=False),
        check=False,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return venv


def wheelhouse(wheel: Path) -> Path:
    """The wheelhouse, holding every dependency of `wheel` at this environment's versions
    (binary wheels only): downloaded from the index only when some are missing."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    constraints = WHEELHOUSE / "constraints.txt"
    constraints.write_text(_pins())
    download = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    # The build backend too: pip builds an sdist from the wheelhouse alone.
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    download += ["-d", str(WHEELHOUSE), "-c", str(constraints), *requirements(wheel), *backend]
    offline = ["--no-index", "--find-links", str(WHEELHOUSE)]
    if _pip(download + offline, index=False).returncode == 0:
        return WHEELHOUSE
    fetched = _pip(download, index=True)
    assert fetched.returncode == 0, (
        "could not fill the wheelhouse from the package index:\n"
        + fetched.stdout[-2000:]
        + fetched.stderr[-2000:]
    )
    return WHEELHOUSE


def _pip(argv: list[str], *, index: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=900, env=_pip_env(index=index), check=False
    )
