"""Public and private views through the CLI, as a board uses them: a submission's page built
from `submission show --json` holds no test score and no score of an event not public yet;
`--private` holds them all (the negative control). The same for the task export.
"""

import json
import os
import subprocess
import sys

import pytest
import sitedata
from contract import validate


def datarun(workspace, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATARUN_HOME": str(workspace.root)}
    result = subprocess.run([sys.executable, "-m", "datarun", *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def board_page(details: dict) -> str:
    """What a web board would publish for a submission: every figure of the JSON, written
    as a page writes scores (4 decimals) and in full."""
    cells = []

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, float):
            cells.append(f"<td>{value:.4f}</td><td data-value='{value!r}'></td>")
        else:
            cells.append(f"<td>{value}</td>")

    walk(details)
    return "<table><tr>" + "".join(cells) + "</tr></table>"


@pytest.fixture
def views_ws(workspace, cli):
    ids = sitedata.make_workspace(workspace, cli)
    return workspace, ids, sitedata.private_numbers(cli, ids)


def found(page: str, numbers) -> list[str]:
    return [text for number in numbers for text in sitedata.formats(number) if text in page]


def test_a_public_submission_page_built_from_the_json_holds_no_test_score(views_ws):
    workspace, ids, private = views_ws
    pages = {}
    for team, sid in ids.items():
        shown = datarun(workspace, "submission", "show", sid, "--json").stdout
        validate(shown)
        details = json.loads(shown)
        assert not details["private"]
        assert all("test" not in task["scores"] for task in details["tasks"])
        assert "test" not in details["bagged"]
        pages[team] = board_page(details)
    assert not found("".join(pages.values()), private)
    # The public scores are there: the page is not empty by accident.
    assert found(pages["ada"], [json.loads(datarun(workspace, "submission", "show", ids["ada"], "--json")
                                           .stdout)["bagged"]["valid"]["accuracy"]])
    # Negative control: the same pages from the private view show the private numbers.
    private_pages = {team: board_page(json.loads(datarun(
        workspace, "submission", "show", sid, "--json", "--private").stdout)) for team, sid in ids.items()}
    ada = json.loads(datarun(workspace, "submission", "show", ids["ada"], "--json", "--private").stdout)
    assert found(private_pages["ada"], [ada["bagged"]["test"]["accuracy"]])
    assert found(private_pages["eve"], private) and found("".join(private_pages.values()), private)

def test_a_submission_of_an_event_not_public_yet_shows_no_score_and_says_when(views_ws):
    workspace, ids, _ = views_ws
    details = json.loads(datarun(workspace, "submission", "show", ids["eve"], "--json").stdout)
    assert details["scores_hidden"] and details["scores_public_at"] == "2999-01-01T00:00:00Z"
    assert details["bagged"] == {} and all(task["scores"] == {} for task in details["tasks"])
    text = datarun(workspace, "submission", "show", ids["eve"]).stdout
    assert "scores not public until 2999-01-01 00:00 UTC; organisers see them with --private" in text
    private = json.loads(datarun(workspace, "submission", "show", ids["eve"], "--json", "--private").stdout)
    assert not private["scores_hidden"] and set(private["bagged"]) == {"valid", "test"}


def test_the_public_task_export_holds_no_test_score_nor_a_hidden_events_score(views_ws):
    workspace, ids, private = views_ws
    public = datarun(workspace, "export", "iris", "--json", "-").stdout
    data = json.loads(public)
    validate(data)
    assert [c for c in data["columns"] if c.startswith("test_")] == ["test_time"]  # no test score
    eve = [row for row in data["tasks"] if row["submission_id"] == ids["eve"]]
    assert eve and all(row["scores_hidden"] == 1 and row["valid_accuracy"] is None for row in eve)
    csv_text = datarun(workspace, "export", "iris", "--csv", "-").stdout
    assert not found(public + csv_text, private)
    full = datarun(workspace, "export", "iris", "--json", "-", "--private").stdout
    assert "test_accuracy" in json.loads(full)["columns"] and found(full, private)
