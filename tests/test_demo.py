"""`datarun demo`: the whole flow on the example kits, on the local host."""

from pathlib import Path

import pytest
from conftest import stop_runners
from contract import validate

from datarun.executors.local import local_layout
from datarun.store.workspace import Workspace


def test_demo_trains_the_examples_and_reports_the_two_failures(tmp_path, cli):
    result = cli("demo", "--dir", tmp_path / "demo", "--json")
    try:
        assert result.exit_code == 0, result.stderr
        data = result.json()
        assert validate(data) == "demo"  # docs/schema/demo.json
        assert data["problems"] == ["diabetes", "iris"]
        boards = {board["problem"]: board for board in data["leaderboards"]}
        assert [r["name"] for r in boards["iris"]["rows"]] and len(boards["iris"]["rows"]) == 3
        assert len(boards["diabetes"]["rows"]) == 3
        assert all(row["score"] is not None for b in boards.values() for row in b["rows"])
        failures = {f["name"]: f["error_kind"] for f in data["failures"]}
        assert failures == {"broken_fit": "fit_error", "memory_hog": "memory_limit"}
        assert data["train"]["failed"] == 10 and data["train"]["done"] == 30
        site = Path(data["site"])
        assert site == tmp_path / "demo" / "site" / "index.html" and site.is_file()
        assert {p.name for p in site.parent.iterdir()} >= {"index.html", "style.css", "iris", "diabetes"}
    finally:
        stop_runners(Workspace(tmp_path / "demo"))


def test_the_demo_prints_where_its_site_is(tmp_path, cli):
    result = cli("demo", "--dir", tmp_path / "demo")
    try:
        assert result.exit_code == 0, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("its site (public view; `datarun site` keeps it current): ")
        assert Path(last.rsplit(": ", 1)[1]).is_file()
    finally:
        stop_runners(Workspace(tmp_path / "demo"))


def test_demo_refuses_an_existing_workspace(tmp_path, cli):
    cli("init", tmp_path / "ws")
    result = cli("demo", "--dir", tmp_path / "ws")
    assert result.exit_code == 2
    assert "already a datarun workspace" in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1  # no bar


@pytest.mark.parametrize("warm", ["0", "1"])  # the runner started by train, or ahead of it
def test_the_demo_leaves_no_runner_behind(tmp_path, cli, monkeypatch, warm):
    import json

    import psutil

    monkeypatch.setenv("DATARUN_WARM_RUNNER", warm)
    assert cli("demo", "--dir", tmp_path / "demo", "--json").exit_code == 0
    pid = json.loads(local_layout(Workspace(tmp_path / "demo")).runner_json.read_text())["pid"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
