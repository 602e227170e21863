"""Finding and creating a workspace: a folder with `hosts.toml` and `.datarun/`.

A workspace is found the way git finds a repository: an explicit `--workspace`, else
`$DATARUN_HOME`, else the nearest parent of the current folder that holds `.datarun/`.
"""

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from datarun.errors import NotFound, UsageError
from datarun.store.db import open_db, workspace_id

STATE_DIR = ".datarun"
HOSTS_FILE = "hosts.toml"

DEFAULT_HOSTS_TOML = """\
# Hosts that run datarun's tasks. See the README, "hosts.toml".

[hosts.local]            # this machine, no SSH
executor = "local"
slots = 2
# workdir = "~/.datarun-host"
# isolation = "none"     # no sandbox: trusted code only (the default is "sandbox")

# [hosts.node1]
# executor = "ssh"
# address = "node1.example.org"
# port = 22
# user = "datarun"
# identity = "~/.ssh/datarun_ed25519"
# workdir = "~/.datarun-host"
# python = "python3"
# slots = 4
# threads = 2
# memory = "16GB"
# tags = ["cpu"]
"""


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.state_dir / "datarun.db"

    @property
    def blobs_dir(self) -> Path:
        return self.state_dir / "blobs"

    @property
    def hosts_file(self) -> Path:
        return self.root / HOSTS_FILE

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "dispatch.lock"

    @property
    def scratch_dir(self) -> Path:
        """The dispatcher's scratch (bundles, downloads), emptied when a dispatcher starts."""
        return self.state_dir / "tmp"

    @property
    def leftovers_path(self) -> Path:
        """Attempts given up on, per host (datarun.dispatch.lanes.Leftovers)."""
        return self.state_dir / "leftovers.json"

    @property
    def environments_path(self) -> Path:
        """The environments `host setup` made on hosts (datarun.store.environments)."""
        return self.state_dir / "environments.json"

    @property
    def known_hosts_path(self) -> Path:
        """The SSH host keys pinned for this workspace (`host trust`)."""
        return self.state_dir / "known_hosts"

    @cached_property
    def id(self) -> str:
        """The workspace's random id, made at `init` and kept in its database: the name of
        its own folder on every host it uses (docs/PROTOCOL.md)."""
        db = open_db(self)
        try:
            return workspace_id(db)
        finally:
            db.conn.close()

    def host_dir(self, host: str) -> Path:
        """The working folder of the embedded local host, and local scratch for others."""
        return self.state_dir / "hosts" / host


def find_workspace(explicit: Path | str | None = None, cwd: Path | None = None) -> Workspace:
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not (root / STATE_DIR).is_dir():
            raise NotFound(f"{root} is not a datarun workspace: run `datarun init {root}` first")
        return Workspace(root)
    env = os.environ.get("DATARUN_HOME")
    if env:
        root = Path(env).expanduser().resolve()
        if not (root / STATE_DIR).is_dir():
            raise NotFound(
                f"DATARUN_HOME={env} is not a datarun workspace: run `datarun init {env}` first"
            )
        return Workspace(root)
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / STATE_DIR).is_dir():
            return Workspace(folder)
    raise NotFound(
        "no datarun workspace here or in any parent folder: run `datarun init`, "
        "or pass --workspace DIR or set DATARUN_HOME"
    )


def init_workspace(path: Path | str) -> Workspace:
    root = Path(path).expanduser().resolve()
    if (root / STATE_DIR).exists():
        raise UsageError(f"{root} is already a datarun workspace (it has {STATE_DIR}/)")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a folder")
    root.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(root)
    # Private: it holds the test labels, and tasks of an isolated local host run as other users.
    workspace.state_dir.mkdir(mode=0o700)
    workspace.blobs_dir.mkdir()
    if not workspace.hosts_file.exists():
        workspace.hosts_file.write_text(DEFAULT_HOSTS_TOML)
    open_db(workspace).conn.close()
    return workspace
