"""The bad-input corpus: every malformed input in tests/corpus/ gives exactly its expected message.

Each case is a folder `tests/corpus/<group>/<case>/` with the input and `expected.txt`, the
one line datarun must answer (`{dir}` stands for the case's folder as the test copies it).
A file ending in `.gz` is unpacked first (oversized inputs stay small in the repository);
git keeps neither FIFOs nor hard links, so a file ending in `.fifo` becomes a FIFO of the
name without it, and one ending in `.hardlink` becomes a file with a second hard link
(outside the case's input). The groups and how each case is fed in:

- kits/: `kit/` is registered with `datarun problem add`; the iris example's `data/` is
  copied in when the kit has none;
- submissions/: `submission/` is sent with `datarun submit` to a registered two-fold iris
  problem, by team `ada` or the team in `team.txt` (UTF-8, without its final newline), with
  the name in `name.txt` when there is one;
- participants/: `participants.txt` or `participants.csv` is given to `datarun event add
  --participants`;
- hosts/: `hosts.toml` replaces the workspace's, then `datarun host list` reads it;
- results/: `result/` is what came back from a host for task `t1-a1` (sent with the nonce
  `corpus-nonce-t1-a1`) of a problem with 4 training rows, 2 test rows and 3 classes (a
  native kit: class probabilities), checked by `datarun.dispatch.results.read_result`.

The CLI cases must fail with exit code 2 and the message on stderr as `error: ...`; the
result cases must be rejected with the message.
"""

import gzip
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import EXAMPLES
from test_operator import small_kit

CORPUS = Path(__file__).resolve().parent / "corpus"
NONCE = "corpus-nonce-t1-a1"  # what the results/ cases' attempt was sent with
CASES = sorted(f"{group.name}/{case.name}" for group in CORPUS.iterdir() if group.is_dir()
               for case in group.iterdir() if case.is_dir())


def _copy_case(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    shutil.copytree(CORPUS / name, folder, symlinks=True)
    for packed in list(folder.rglob("*.gz")):
        packed.with_suffix("").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    for marker in list(folder.rglob("*.fifo")):
        os.mkfifo(marker.with_suffix(""))
        marker.unlink()
    for marker in list(folder.rglob("*.hardlink")):
        marker.rename(marker.with_suffix(""))
        os.link(marker.with_suffix(""), tmp_path / f"other-link-{marker.stem}")
    return folder


def _text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8").removesuffix("\n") if path.exists() else None


def answer(name: str, folder: Path, workspace, cli) -> str:
    """What datarun says about this case: the error line or the rejection."""
    group = name.split("/")[0]
    if group == "results":
        from datarun.dispatch.results import ResultRejected, read_result

        try:
            read_result(folder / "result", "t1-a1", (4, 3), (2, 3), nonce=NONCE, probabilities=True)
        except ResultRejected as error:
            return str(error)
        return "accepted"
    if group == "kits":
        kit = folder / "kit"
        if not (kit / "data").exists():
            shutil.copytree(EXAMPLES / "iris" / "data", kit / "data")
        result = cli("problem", "add", kit)
    elif group == "submissions":
        assert cli("problem", "add", small_kit(folder.parent)).exit_code == 0
        (folder / "submission").mkdir(exist_ok=True)
        name = _text(folder / "name.txt")
        result = cli("submit", "flowers", folder / "submission",
                     "--team", _text(folder / "team.txt") or "ada", *(["--name", name] if name else []))
    elif group == "participants":
        assert cli("problem", "add", small_kit(folder.parent)).exit_code == 0
        [teams] = [path for path in folder.iterdir() if path.stem == "participants"]
        result = cli("event", "add", "spring", "--problem", "flowers", "--participants", teams)
    elif group == "hosts":
        shutil.copyfile(folder / "hosts.toml", workspace.hosts_file)
        result = cli("host", "list")
    else:
        raise AssertionError(f"unknown corpus group {group}")
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr[len("error: "):].rstrip("\n")


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30
    assert {name.split("/")[0] for name in CASES} == {
        "kits", "submissions", "participants", "hosts", "results"}


def test_the_readme_counts_the_corpus_as_it_is():
    readme = (CORPUS.parent.parent / "README.md").read_text()
    claimed = re.search(r"^\| (\d+) malformed inputs", readme, re.MULTILINE)
    assert claimed, "the README's Reliability table names no count of malformed inputs"
    assert int(claimed.group(1)) == len(CASES)


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gets_its_exact_message(name, workspace, cli, tmp_path):
    folder = _copy_case(name, tmp_path)
    expected = (CORPUS / name / "expected.txt").read_text().rstrip("\n").replace("{dir}", str(folder))
    assert answer(name, folder, workspace, cli) == expected
