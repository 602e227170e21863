"""A hostile RAMP submission looks for labels it must not see, through the whole CLI.

The RAMP regressor kit (tests/ramp_kits/diabetes_regressor) is registered in a workspace
under a folder anyone may enter, and tests/attacks/ramp_labels.py is submitted: on each
fold it searches the objects it is handed and can reach (containers, frames, attributes),
its whole memory (/proc/self/mem) and every file it can see for the labels of its fold's
validation rows and of the test rows, and prints what it found. Sandboxed (the default),
it finds nothing beyond its fold's training labels. The negative control, the same code
on the same host with `isolation = "none"` (no sandbox, so no scrub either), finds the
validation labels in its memory, in the runner's objects and in files (the data set's
y_train.pkl, the kit's train.csv), and the test labels in the kit's test.csv.
"""

import csv
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from conftest import stop_runners

from datarun.executors.local import local_layout

KIT = Path(__file__).resolve().parent / "ramp_kits" / "diabetes_regressor"
ATTACK = Path(__file__).resolve().parent / "attacks" / "ramp_labels.py"
MASK = 0x5A


def _masked(data: bytes) -> str:
    return bytes(b ^ MASK for b in data).hex()


def _labels_and_lines(path: Path) -> tuple[np.ndarray, list[str]]:
    text = path.read_text()
    lines = text.splitlines()[1:]
    labels = np.array([float(row["target"]) for row in csv.DictReader(text.splitlines())])
    return labels, [_masked(line.encode()) for line in lines]


def attack_code(kit: Path, roots: list[str]) -> str:
    y_train, train_lines = _labels_and_lines(kit / "data" / "train.csv")
    y_test, test_lines = _labels_and_lines(kit / "data" / "test.csv")
    half, test_half = len(y_train) // 2, len(y_test) // 2
    targets = {"mask": MASK, "n_train": len(y_train),
               "train_first": _masked(y_train[:half].tobytes()),
               "train_second": _masked(y_train[half:].tobytes()),
               "test_first": _masked(y_test[:test_half].tobytes()),
               "test_second": _masked(y_test[test_half:].tobytes()),
               "train_lines": train_lines, "test_lines": test_lines, "roots": roots}
    return ATTACK.read_text().replace("{targets}", json.dumps(targets).encode().hex())


def findings(cli, submission: int) -> list[dict]:
    shown = cli("submission", "show", submission, "--json").json()
    found = []
    for task in shown["tasks"]:
        assert task["state"] == "done", task["error"]
        log = cli("logs", task["id"]).stdout
        counts = {}
        for line in log.splitlines():
            words = line.split()
            if line.startswith(("object matches", "test object", "memory matches", "test memory",
                                "file matches", "test file")):
                counts[" ".join(words[:-1])] = int(words[-1])
            elif line.startswith("given rows"):
                counts["given"] = int(words[2])
                counts["n_train"] = int(words[4])
                counts["valid"] = int(words[7])
        counts["found"] = [line.split(maxsplit=1)[1] for line in log.splitlines()
                           if line.startswith("found ")]
        found.append(counts)
    return found


def submit_attack(cli, folder: Path, code: str, team: str) -> int:
    folder.mkdir(parents=True)
    (folder / "regressor.py").write_text(code)
    result = cli("submit", "diabetes_regressor", folder, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def test_a_ramp_submission_finds_no_label_beyond_its_folds_training_rows(cli, monkeypatch):
    from datarun.store.workspace import init_workspace

    base = Path(tempfile.mkdtemp(prefix="datarun-ramp-attack-", dir="/var/tmp"))
    base.chmod(0o755)
    workspace = None
    try:
        kit = base / "kit" / "diabetes_regressor"
        shutil.copytree(KIT, kit)
        workspace = init_workspace(base / "ws")
        monkeypatch.setenv("DATARUN_HOME", str(workspace.root))
        assert cli("problem", "add", kit).exit_code == 0
        workdir = local_layout(workspace).root
        code = attack_code(kit, [str(workspace.root), str(base / "kit"), str(workdir)])

        boxed = submit_attack(cli, base / "subs" / "boxed", code, "ada")
        trained = cli("train", "--json")
        assert trained.exit_code == 0, findings(cli, boxed)
        text = workspace.hosts_file.read_text()
        workspace.hosts_file.write_text(
            text.replace('executor = "local"', 'executor = "local"\nisolation = "none"', 1))
        open_ = submit_attack(cli, base / "subs" / "open", code + "\n# unsandboxed\n", "bob")
        trained = cli("train", "--json")
        assert trained.exit_code == 0, findings(cli, open_)

        for counts in findings(cli, boxed):
            # It was handed its fold's training labels, and there were rows to look for.
            assert counts["given"] == counts["n_train"] - counts["valid"] and counts["valid"] > 0
            assert (counts["object matches"], counts["memory matches"], counts["file matches"]) == (0, 0, 0), counts
            assert (counts["test object matches"], counts["test memory matches"],
                    counts["test file matches"]) == (0, 0, 0), counts
        data = str(workdir / "data")
        for counts in findings(cli, open_):
            assert counts["object matches"] >= 1 and counts["memory matches"] >= 1, counts
            assert counts["file matches"] >= 2 and counts["test file matches"] >= 1, counts
            assert any(path.startswith(data) and path.endswith("y_train.pkl") for path in counts["found"])
            assert str(kit / "data" / "train.csv") in counts["found"]
            assert str(kit / "data" / "test.csv") in counts["found"]
            # The test labels never reach a host, not even its memory.
            assert (counts["test object matches"], counts["test memory matches"]) == (0, 0), counts
    finally:
        if workspace is not None:
            stop_runners(workspace)
        shutil.rmtree(base, ignore_errors=True)
