"""The `datarun` command's head start on `problem add` of a RAMP kit (datarun/prefetch.py).

The kit is read in a forked child while the CLI loads; the result must be exactly what
reading it in the CLI's own process gives, refusals included, and a guess that does not
match the parsed command must be dropped.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KITS = Path(__file__).resolve().parent / "ramp_kits"
DATARUN = [sys.executable, "-m", "datarun"]


def run(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([*DATARUN, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize(("argv", "expected"), [
    (["problem", "add", "KIT"], ({}, True)),
    (["-w", "ws", "problem", "add", "KIT", "--json", "--env", "A=1", "--env", "B=x=y",
      "--data-file-cap", "1MB"], ({"A": "1", "B": "x=y"}, True)),
    (["problem", "add", "KIT", "--env"], None),
    (["problem", "add", "KIT", "--env", "A"], None),
    (["problem", "add", "KIT", "--help"], None),
    (["problem", "add"], None),
    (["problem", "show", "KIT"], None),
    (["--workspace=ws", "problem", "add", "KIT"], None),
])
def test_the_guess_takes_only_a_plain_problem_add_of_a_ramp_kit(argv, expected):
    from datarun.prefetch import _guess

    kit = KITS / "iris_classifier"
    got = _guess([str(kit) if a == "KIT" else a for a in argv])
    if expected is None:
        assert got is None
    else:
        assert got == (kit.resolve(), expected[0])
    assert _guess(["problem", "add", str(Path(__file__).parent.parent / "examples" / "iris")]) is None


def test_a_head_start_for_another_command_is_dropped(tmp_path):
    from datarun import prefetch as launch

    launch.start(["problem", "add", str(KITS / "iris_classifier"), "--env", "A=1"])
    pending = launch.PENDING
    assert pending is not None and Path(pending.folder).is_dir()
    assert launch.take(KITS / "iris_classifier", {}) is None  # not the same env: dropped
    assert launch.PENDING is None and not Path(pending.folder).exists()


def test_problem_add_with_and_without_the_head_start_store_the_same(tmp_path):
    rows = {}
    for prefetch in ("1", "0"):
        workspace = tmp_path / f"ws{prefetch}"
        assert run(["init", workspace]).returncode == 0
        result = run(["-w", workspace, "problem", "add", KITS / "diabetes_multi", "--env",
                      "RAMP_X=1", "--json"], {"DATARUN_PREFETCH": prefetch})
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        rows[prefetch] = {k: info[k] for k in ("data_hash", "n_train", "n_test", "folds",
                                              "scores", "ramp", "notes")}
        refused = run(["-w", workspace, "problem", "add", KITS / "diabetes_multi"],
                      {"DATARUN_PREFETCH": prefetch})
        assert refused.stderr.strip() == (
            "error: problem 'diabetes_multi' is already registered: a RAMP kit is registered "
            "under its folder's name: rename the folder")
    assert rows["1"] == rows["0"]
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("datarun-kit-*/summary.json"))


def test_a_refused_kit_says_the_same_from_the_head_start(tmp_path):
    kit = tmp_path / "broken"
    import shutil

    shutil.copytree(KITS / "iris_classifier", kit)
    text = (kit / "problem.py").read_text().replace("problem_title = ",
                                                    "print('kit says hi')\n_x = 1 / 0\nproblem_title = ")
    (kit / "problem.py").write_text(text)
    messages = set()
    for prefetch in ("1", "0"):
        workspace = tmp_path / f"ws{prefetch}"
        assert run(["init", workspace]).returncode == 0
        result = run(["-w", workspace, "problem", "add", kit, "--json"],
                     {"DATARUN_PREFETCH": prefetch})
        assert result.returncode == 2  # the kit's print: on stderr; stdout holds the error object
        assert json.loads(result.stdout)["error"]["kind"] == "invalid"
        messages.add(result.stderr.strip())
    assert messages == {"kit says hi\nerror: problem.py failed to import: ZeroDivisionError: "
                        "division by zero (problem.py line 8)"}
