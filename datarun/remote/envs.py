"""Environments on a host: a virtual environment per set of requirements, made with pip.

`datarun host setup` asks for one with the requirements of the problems it serves. It
lives in WORKDIR/envs/<hash of the sorted requirements>/, made from the host's own Python
with `--system-site-packages` (so the harness's numpy, pandas, scikit-learn and psutil
stay importable unless a requirement pins another version, which the environment then
holds), filled by that environment's pip with the host's own package index settings
(pip.conf, PIP_* variables), and described by the versions pip resolved. The runner is
then started with the environment's Python, and the sandbox binds the environment like
any Python installation a runner uses. An environment already made for the same
requirements is reused (a `.complete` marker is written last).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .common import HarnessError, Layout, read_json, runner_alive

REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
BASE_PACKAGES = ("numpy", "pandas", "scikit-learn", "psutil")
PIP_TIMEOUT = 900.0


def env_name(requirements: list[str]) -> str:
    text = "\n".join(sorted(r.strip() for r in requirements if r.strip()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _names(requirements: list[str]) -> list[str]:
    names = []
    for line in requirements:
        match = REQUIREMENT_NAME.match(line)
        if match:
            names.append(match.group(1))
    return names


def _versions(python: str, names: list[str]) -> dict[str, str | None]:
    script = ("import json, sys\nfrom importlib import metadata\nout = {}\n"
              "for name in sys.argv[1:]:\n"
              "    try:\n        out[name] = metadata.version(name)\n"
              "    except metadata.PackageNotFoundError:\n        out[name] = None\n"
              "print(json.dumps(out))\n")
    done = subprocess.run([python, "-c", script, *names], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise HarnessError(f"the environment's Python fails: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:])[-600:]


def _stop_idle_runner(layout: Layout) -> bool:
    """Stop this workspace's runner if it runs no task, so the next one starts in the new
    environment; a runner with tasks is left alone (it exits when idle)."""
    if not runner_alive(layout):
        return False
    current = read_json(layout.runner_json) or {}
    pid = current.get("pid")
    if not isinstance(pid, int) or pid <= 1 or current.get("running"):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True


def _see_parent_env(folder: Path) -> None:
    """A host Python that is itself a virtual environment: `--system-site-packages` reaches
    only its base installation, so its own site-packages (where numpy and friends are) are
    added behind the new environment's by a .pth file."""
    if sys.prefix == sys.base_prefix:
        return
    import site

    targets = list((folder / "lib").glob("python*/site-packages"))
    if targets:
        (targets[0] / "_datarun_parent_env.pth").write_text(
            "".join(path + "\n" for path in site.getsitepackages() if os.path.isdir(path)))


def setup(workdir: str | os.PathLike, requirements: list[str], space: str | None = None) -> dict:
    """Make (or reuse) the environment for `requirements`; its Python and resolved versions."""
    layout = Layout(workdir, space).make()
    folder = layout.root / "envs" / env_name(requirements)
    python = folder / "bin" / "python"
    made = False
    if not (folder / Layout.COMPLETE).exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(folder)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise HarnessError(f"cannot make a virtual environment with {sys.executable}: {_tail(done.stderr)} "
                               "(on Debian: apt-get install python3-venv)")
        _see_parent_env(folder)
        if requirements:
            done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                                   "--no-input", "--quiet", *requirements],
                                  capture_output=True, text=True, timeout=PIP_TIMEOUT)
            if done.returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                raise HarnessError(f"pip could not install {' '.join(requirements)}: {_tail(done.stderr)}")
        (folder / Layout.COMPLETE).write_text(json.dumps({"requirements": requirements}))
        made = True
    names = list(dict.fromkeys(_names(requirements) + list(BASE_PACKAGES)))
    versions = _versions(str(python), names)
    missing = [name for name in _names(requirements) if versions.get(name) is None]
    if missing:
        raise HarnessError(f"the environment lacks {', '.join(missing)} after pip install")
    return {"python": str(python), "folder": str(folder), "made": made, "requirements": requirements,
            "versions": versions, "runner_stopped": _stop_idle_runner(layout)}
