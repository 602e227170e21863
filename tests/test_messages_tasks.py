"""Error messages of `datarun logs` and `datarun cancel` that no other test triggered: a
running task whose host is gone from hosts.toml, whose folder is gone from its host, or
whose output cannot be read there.

The task is put in the state the dispatcher leaves it in once it launched it (`running`
on a host, attempt 1) without training anything.
"""

import pytest
from conftest import stop_runners
from test_operator import GOOD, small_kit, submit, tasks_of

from datarun.executors.hosts import add_host
from datarun.executors.local import local_layout
from datarun.store.db import open_db


@pytest.fixture
def flowers(workspace, cli, tmp_path):
    result = cli("problem", "add", small_kit(tmp_path))
    assert result.exit_code == 0, result.stderr
    yield workspace
    stop_runners(workspace)


def mark_running(workspace, submission: int, host: str) -> list[int]:
    """The submission's tasks as the dispatcher leaves them once launched on HOST."""
    db = open_db(workspace)
    try:
        db.execute("UPDATE tasks SET state = 'running', host = ?, attempt = 1, "
                   "started_at = strftime('%s') WHERE submission = ?", [host, submission])
        return [row[0] for row in db.execute(
            "SELECT id FROM tasks WHERE submission = ? ORDER BY fold", [submission])]
    finally:
        db.conn.close()


def test_logs_of_a_task_whose_folder_is_gone_from_its_host(flowers, cli, tmp_path):
    good = submit(cli, tmp_path, "good", GOOD)
    task = mark_running(flowers, good, "local")[0]
    result = cli("logs", task)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: host local: no task t{task}-a1 on this host\n"
    assert {t["state"] for t in tasks_of(cli, good)} == {"running"}  # nothing changed


def test_logs_of_a_task_whose_output_cannot_be_read(flowers, cli, tmp_path):
    good = submit(cli, tmp_path, "good", GOOD)
    task = mark_running(flowers, good, "local")[0]
    output = local_layout(flowers).task(f"t{task}-a1") / "output.log"
    output.mkdir(parents=True)  # not a file: reading it fails with an OSError
    result = cli("logs", task)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"error: host local: IsADirectoryError: [Errno 21] Is a directory: '{output}'\n"


def test_a_host_removed_under_running_tasks(flowers, cli, tmp_path):
    add_host(flowers.hosts_file, "spare", {"executor": "local", "slots": 1})
    good = submit(cli, tmp_path, "good", GOOD)
    ids = mark_running(flowers, good, "spare")
    assert cli("host", "remove", "spare").exit_code == 0

    result = cli("logs", ids[0])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == "error: host spare is no longer in hosts.toml\n"

    # cancel still marks the tasks cancelled, then says which host it could not reach.
    result = cli("cancel", good)
    assert result.exit_code == 1 and result.stdout == ""
    # The host is named once: the message names it already.
    assert result.stderr == (
        f"submission {good}: 2 tasks cancelled (2 running, 0 queued)\n"
        "host spare is no longer in hosts.toml; its tasks are marked cancelled and "
        "whatever they still produce is ignored\n")
    for task in tasks_of(cli, good):
        assert (task["state"], task["error_kind"]) == ("cancelled", "cancelled")


def test_cancel_as_json_reports_the_host_error_in_the_document(flowers, cli, tmp_path):
    add_host(flowers.hosts_file, "spare", {"executor": "local", "slots": 1})
    good = submit(cli, tmp_path, "good", GOOD)
    ids = mark_running(flowers, good, "spare")
    assert cli("host", "remove", "spare").exit_code == 0
    result = cli("cancel", good, "--json")
    assert result.exit_code == 1
    assert result.json() == {
        "schema": "datarun/cancel/1", "submission_id": good, "cancelled": ids, "queued": [], "running": ids,
        "host_errors": {"spare": "host spare is no longer in hosts.toml; its tasks are marked "
                                 "cancelled and whatever they still produce is ignored"}}
    assert result.stderr == ("host spare is no longer in hosts.toml; its tasks are "
                             "marked cancelled and whatever they still produce is ignored\n")
