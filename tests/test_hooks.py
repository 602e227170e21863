"""Cron and hooks: `dispatch` lines carry their time, `dispatch --json` names the newly
scored and newly failed submissions, and `[hooks]` in datarun.toml runs a command with
the event's JSON on its standard input, off the dispatcher's thread, its failures logged."""

import json
import re
import sys
import textwrap

import pytest
from conftest import EXAMPLES, stop_runners
from contract import validate

SUBS = EXAMPLES / "iris" / "submissions"


@pytest.fixture
def iris(workspace, cli):
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    yield workspace
    stop_runners(workspace)


def submit(cli, name, team):
    result = cli("submit", "iris", SUBS / name, "--team", team, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()["id"]


def hook_script(tmp_path, body: str):
    script = tmp_path / "hook.py"
    script.write_text(textwrap.dedent(body))
    return script


def config(workspace, text: str):
    (workspace.root / "datarun.toml").write_text(textwrap.dedent(text))


def test_dispatch_lines_are_timestamped_and_its_json_lists_scored_and_failed(iris, cli):
    good, bad = submit(cli, "logreg", "ada"), submit(cli, "broken_fit", "bob")
    scored, failed, lines = set(), set(), []
    for _ in range(60):
        result = cli("dispatch", "--json")
        assert result.exit_code == 0, result.stderr
        scored |= set(result.json()["scored_submissions"])
        failed |= set(result.json()["failed_submissions"])
        if good in scored and bad in failed:
            break
    assert (scored, failed) == ({good}, {bad})
    retried = cli("retry", str(bad))
    assert retried.exit_code == 0
    for _ in range(60):
        text = cli("dispatch")
        lines.append(text.stderr)
        if "failed" in text.stderr.split("re-queued")[-1]:
            break
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ collected \d+, launched \d+, "
                            r"re-queued \d+(; failed \d+)?\n", line) for line in lines)
    assert lines[-1].rstrip().endswith(f"; failed {bad}")


def test_hooks_get_the_events_json_and_a_failing_hook_blocks_nothing(iris, cli, tmp_path):
    seen = tmp_path / "seen"
    seen.mkdir()
    script = hook_script(tmp_path, f"""
        import json, sys
        event = json.load(sys.stdin)
        with open({str(seen)!r} + "/" + event["kind"] + "-" + str(event["submission_id"]), "w") as f:
            json.dump(event, f)
        if event["kind"] == "submission_failed":
            print("mail server down", file=sys.stderr)
            sys.exit(3)
        """)
    config(iris, f"""
        [hooks]
        on_scored = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]
        on_failed = "{sys.executable} {script}"
        timeout = "20s"
        """)
    good, bad = submit(cli, "logreg", "ada"), submit(cli, "broken_fit", "bob")
    result = cli("train", "--json")
    assert result.exit_code == 1  # a fold failed
    summary = result.json()
    assert (summary["scored_submissions"], summary["failed_submissions"]) == ([good], [bad])
    scored = json.loads((seen / f"submission_scored-{good}").read_text())
    assert validate(scored) == "hook" and scored["team"] == "ada" and scored["event"] == "iris"
    assert scored["score"]["name"] == "accuracy" and 0.8 < scored["score"]["value"] <= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", scored["notified_at"])
    assert "test" not in json.dumps(scored)
    failed = json.loads((seen / f"submission_failed-{bad}").read_text())
    assert validate(failed) == "hook"
    assert {f["error_kind"] for f in failed["failures"]} == {"fit_error"}
    assert failed["failures"][0]["error_tail"][-1].startswith("ValueError: this estimator cannot fit")
    message = f"hook submission_failed for submission {bad}: {sys.executable} exited with status 3: mail server down"
    assert summary["hook_failures"] == [message]
    assert message in result.stderr
    log = (iris.state_dir / "hooks.log").read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ " + re.escape(message) + "\n", log)


def test_a_hook_past_its_timeout_is_killed_and_logged(iris, cli, tmp_path):
    script = hook_script(tmp_path, "import time\ntime.sleep(60)\n")
    config(iris, f"""
        [hooks]
        on_scored = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]
        timeout = "1s"
        """)
    good = submit(cli, "logreg", "ada")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["hook_failures"] == [
        f"hook submission_scored for submission {good}: {sys.executable} ran past its timeout of 1s and was killed"]


def test_a_hook_that_cannot_start_is_logged(iris, cli, tmp_path):
    config(iris, """
        [hooks]
        on_scored = "/nonexistent/notify"
        """)
    good = submit(cli, "logreg", "ada")
    result = cli("train", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["hook_failures"] == [
        f"hook submission_scored for submission {good}: cannot run /nonexistent/notify: No such file or directory"]


@pytest.mark.parametrize("text, message", [
    ("[hooks\n", "datarun.toml: not valid TOML: "),
    ("[mail]\nto = 'x'\n", "datarun.toml: unknown table or key 'mail' (known: [hooks])"),
    ("hooks = 1\n", "datarun.toml: 'hooks' must be a table ([hooks])"),
    ("[hooks]\non_done = 'x'\n", "datarun.toml: [hooks] on_done: unknown key (known: on_scored, on_failed, timeout)"),
    ("[hooks]\non_scored = 3\n", "datarun.toml: [hooks] on_scored must be a command: a string or a list of strings"),
    ("[hooks]\non_scored = ''\n", "datarun.toml: [hooks] on_scored is empty: give the command to run"),
    ("[hooks]\non_scored = 'a \"b'\n", "datarun.toml: [hooks] on_scored: No closing quotation"),
    ("[hooks]\ntimeout = 30\n", "datarun.toml: [hooks] timeout: '30' has no unit"),
])
def test_a_bad_hooks_config_stops_dispatch_in_one_line(workspace, cli, text, message):
    (workspace.root / "datarun.toml").write_text(text)
    result = cli("dispatch")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: " + message) and len(result.stderr.splitlines()) == 1


def test_a_slow_hook_does_not_hold_the_dispatcher(iris, cli, tmp_path):
    """While the hook of a failed submission sleeps, the dispatcher goes on collecting the
    other submission's folds (it records when it took each result). The failure comes
    first: one fold of each new submission runs first, and a failed fold is news at once."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = hook_script(tmp_path, f"""
        import json, sys, time
        event = json.load(sys.stdin)
        start = time.time()
        time.sleep(4)
        with open({str(marks)!r} + "/" + str(event["submission_id"]), "w") as f:
            json.dump([start, time.time()], f)
        """)
    config(iris, f"""
        [hooks]
        on_failed = [{json.dumps(sys.executable)}, {json.dumps(str(script))}]
        """)
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "estimator.py").write_text(textwrap.dedent("""
        import time
        from sklearn.linear_model import LogisticRegression

        class Slow(LogisticRegression):
            def fit(self, X, y):
                time.sleep(1)
                return super().fit(X, y)

        def get_estimator():
            return Slow(max_iter=1000)
        """))
    broken = submit(cli, "broken_fit", "bob")
    other = cli("submit", "iris", slow, "--team", "grace", "--json").json()["id"]
    result = cli("train", "--json")
    assert result.exit_code == 1 and result.json()["failed_submissions"] == [broken]
    assert result.json()["hook_failures"] == []
    start, end = json.loads((marks / str(broken)).read_text())
    from datarun.store.db import open_db

    db = open_db(iris)
    taken = [row[0] for row in db.execute("SELECT finished_at FROM tasks WHERE submission = ?", [other])]
    assert any(start < when < end for when in taken), (start, end, sorted(taken))
