"""Writing the site into a folder: only what changed, atomically, safe to run from cron.

Each page's digest is taken over its model (what it shows, datarun/site/model.py) and the
generator (this package's code and templates), before anything is rendered. A page whose
digest is in the folder's manifest, and whose file is there, is skipped without rendering;
a page no longer in the site (a submission gone from it, an event left out) is deleted; a
plot frame not cached is drawn by matplotlib, once (datarun/site/plots.py).

Every file is written to a temporary name in its own folder and renamed over the old one,
so a web server serving the folder never sends half a page; the manifest is written the
same way, last. Runs on one folder take turns (a lock in `.datarun-site/`), so a hook and
a cron job may both call `datarun site` at any time.

A folder holds one kind of site: a public one is never turned into a private one (test
scores written into a folder a web server publishes), nor the reverse; and `datarun site`
writes only into a new folder, an empty one, or one holding its own site.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datarun.errors import UsageError
from datarun.site.model import Page, site_pages

STATE_DIR = ".datarun-site"
MANIFEST_VERSION = 1
PACKAGE = Path(__file__).resolve().parent


def generator_digest() -> str:
    """A digest of the code and templates that turn models into files: a new datarun
    rewrites every page."""
    digest = hashlib.sha256(f"manifest {MANIFEST_VERSION} python {sys.version}\n".encode())
    sources = sorted([*PACKAGE.glob("*.py"), *(PACKAGE / "templates").iterdir(),
                      PACKAGE.parent / "sizes.py"])
    for path in sources:
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def page_digest(generator: str, page: Page) -> str:
    # pickle is the fastest exact serialisation of the model (floats bit for bit). Equal
    # models from the same code give equal bytes; if they ever did not, the page would
    # merely be written again. Different models never give equal bytes.
    body = pickle.dumps(page.model, protocol=5)
    return hashlib.sha256(f"{generator}\0{page.path}\0{page.template}\0".encode() + body).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for a run already writing this folder
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FrameCache:
    """Plot frames by key, kept in `.datarun-site/frames/`; matplotlib draws the missing ones."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.rendered = 0

    def get(self, spec: dict) -> str:
        from datarun.site import plots

        path = self.folder / f"{plots.frame_key(spec)}.svg"
        if path.is_file():
            return path.read_text()
        svg = plots.render_frame(spec)
        write_atomic(path, svg.encode())
        self.rendered += 1
        return svg

    def prune(self, keep: set[str]) -> None:
        if self.folder.is_dir():
            for path in self.folder.glob("*.svg"):
                if path.stem not in keep:
                    path.unlink(missing_ok=True)


def _frame_keys(pages: list[Page]) -> set[str]:
    from datarun.site import plots

    specs = []
    for page in pages:
        if page.template == "svg":
            specs.append(page.model["spec"])
        elif page.template == "event.html":
            specs += list(page.model["plots"].values())
    return {plots.frame_key(spec) for spec in specs}


def _check_folder(out: Path) -> dict:
    """The folder's manifest ({} for a new or empty folder); refuse any other folder."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give `datarun site` a folder to write the site in")
    manifest = out / STATE_DIR / "manifest.json"
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError):
            found = None
        if not isinstance(found, dict) or found.get("version") != MANIFEST_VERSION:
            raise UsageError(f"{manifest} is not a manifest this datarun wrote: remove {out} and "
                             "run `datarun site` again")
        return found
    if out.is_dir() and any(entry.name != STATE_DIR for entry in out.iterdir()):
        raise UsageError(f"{out} is not empty and holds no datarun site: choose a new or empty "
                         "folder (`datarun site` writes and deletes files in it)")
    return {}


def build_site(workspace, db, out: Path, problem: str | None = None, event: str | None = None,
               private: bool = False, now: float | None = None) -> dict:
    """Write (or bring up to date) the site of the selected problems and events in `out`."""
    from datarun.safetext import printable
    from datarun.store.blobs import BlobStore

    out = Path(out)
    old = _check_folder(out)
    if old and bool(old.get("private")) != private:
        kind = "private" if old.get("private") else "public"
        raise UsageError(f"{out} holds a {kind} site: write the {'private' if private else 'public'} "
                         f"one to another folder (or remove {out} first)")
    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    with _locked(state / "lock"):
        old = _check_folder(out)  # another run may have written it while this one waited
        pages = site_pages(workspace, db, problem=problem, event=event, private=private, now=now)
        pages.append(Page("style.css", "static", {}))
        generator = generator_digest()
        old_pages = old.get("pages", {}) if old.get("generator") == generator else {}
        manifest: dict[str, Any] = {"version": MANIFEST_VERSION, "private": private,
                                    "generator": old.get("generator"),
                                    "pages": dict(old.get("pages", {}))}
        new_paths = [page.path for page in pages if page.path not in manifest["pages"]]
        if new_paths or not old:
            # Record every file this run may write before writing it, so a run that dies
            # half-way leaves a folder the next run recognises and cleans up.
            manifest["pages"].update(dict.fromkeys(new_paths, ""))
            _write_manifest(state, manifest)
        frames = FrameCache(state / "frames")
        store = BlobStore(workspace.blobs_dir)
        renderer = None
        digests: dict[str, str] = {}
        written: list[str] = []
        for page in pages:
            digest = page_digest(generator, page)
            digests[page.path] = digest
            target = out / page.path
            if old_pages.get(page.path) == digest and target.is_file():
                continue
            if renderer is None:
                from datarun.site.pages import Renderer

                renderer = Renderer(frames.get, lambda files: {
                    name: printable(store.get_bytes(blob).decode("utf-8", "replace"))
                    for name, blob in sorted(files.items())})
            data = renderer.static(page.path) if page.template == "static" else renderer.render(page)
            write_atomic(target, data)
            written.append(page.path)
        removed = sorted(path for path in manifest["pages"] if path not in digests)
        for path in removed:
            _remove(out, path)
        frames.prune(_frame_keys(pages))
        final = {"version": MANIFEST_VERSION, "private": private, "generator": generator,
                 "pages": digests}
        if final != old:
            _write_manifest(state, final)
    return {"out": str(out), "index": str(out / "index.html"), "private": private,
            "pages": len(digests), "written": written, "unchanged": len(digests) - len(written),
            "removed": removed, "frames_drawn": frames.rendered}


def _write_manifest(state: Path, manifest: dict) -> None:
    write_atomic(state / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())


def _remove(out: Path, relative: str) -> None:
    """Delete a page the site no longer has, and its folder once empty."""
    target = out / relative
    if ".." in Path(relative).parts or not target.resolve().is_relative_to(out.resolve()):
        return  # not a path this datarun wrote: a manifest edited by hand
    target.unlink(missing_ok=True)
    folder = target.parent
    while folder != out and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
