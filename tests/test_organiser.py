"""The organiser's day-to-day: editing and removing events, closing dates, hiding
submissions, removing problems, teams' final choices, each team's best, `host add local`.

No training here: submissions go in through the CLI, then their tasks are marked done and
scored with rows written straight into the workspace's real SQLite file."""

import pytest
from conftest import EXAMPLES
from contract import validate

from datarun.store.db import open_db

SUBMISSIONS = EXAMPLES / "iris" / "submissions"
SCORES = ["accuracy", "log_loss", "roc_auc"]


@pytest.fixture
def iris(workspace, cli):
    result = cli("problem", "add", EXAMPLES / "iris")
    assert result.exit_code == 0, result.stderr
    return workspace


def submit_scored(workspace, cli, folder, team, accuracy, event=None, test=None):
    args = ["submit", "iris", SUBMISSIONS / folder, "--team", team, "--force", "--json"]
    result = cli(*args, *(["--event", event] if event else []))
    assert result.exit_code == 0, result.stderr
    sid = result.json()["id"]
    db = open_db(workspace)
    with db.conn:
        db.execute("UPDATE tasks SET state = 'done', train_time = 0.5, valid_time = 0.25, "
                   "test_time = 0.125, cpu_time = 1.0, peak_memory = 1000 WHERE submission = ?", [sid])
        for split, value in (("valid", accuracy), ("test", accuracy - 0.5 if test is None else test)):
            for score, v in zip(SCORES, (value, 1 - value, 0.9), strict=True):
                db.execute("INSERT INTO bagged_scores (submission, split, score, value) VALUES (?, ?, ?, ?)",
                           [sid, split, score, v])
    return sid


def board(cli, *args):
    result = cli("leaderboard", "iris", *args, "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "leaderboard"
    return [(row["rank"], row["team"], row["id"]) for row in result.json()["rows"]]


def event(cli, name):
    return cli("event", "show", name, "--json").json()


# -- dates --------------------------------------------------------------------------------


def test_a_bare_closing_date_closes_at_the_end_of_that_day_and_zones_are_kept(iris, cli):
    result = cli("event", "add", "spring", "--problem", "iris", "--opens", "2026-12-01",
                 "--closes", "2026-12-31", "--public-opens", "2026-12-31T23:59+01:00", "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "event"
    spring = result.json()
    assert spring["opens_at"] == "2026-12-01T00:00:00Z"  # an opening date starts its day
    assert spring["closes_at"] == "2027-01-01T00:00:00Z"  # the 31st is open all day
    assert spring["public_opens_at"] == "2026-12-31T22:59:00Z"


# -- event edit / remove ------------------------------------------------------------------


def test_event_edit_changes_rules_records_them_and_clear_takes_one_away(iris, cli):
    cli("event", "add", "spring", "--problem", "iris", "--closes", "2000-01-01", "--max-submissions", "2")
    assert event(cli, "spring")["state"] == "closed"
    result = cli("event", "edit", "spring", "--closes", "2999-12-31", "--max-final", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "event"
    assert result.json()["closes_at"] == "3000-01-01T00:00:00Z" and result.json()["max_final"] == 2
    assert event(cli, "spring")["state"] == "open"
    assert cli("event", "edit", "spring", "--clear", "max-submissions").exit_code == 0
    assert event(cli, "spring")["max_submissions"] is None
    result = cli("history", "spring", "--json")
    assert validate(result.stdout) == "history"
    history = result.json()["actions"]
    assert [row["action"] for row in history] == ["event_edited", "event_edited"]
    # 2000-01-01 closed at its end; the rules named as `event` names them
    assert history[0]["detail"]["before"] == {"closes_at": "2000-01-02T00:00:00Z", "max_final": None}
    assert history[0]["detail"]["after"] == {"closes_at": "3000-01-01T00:00:00Z", "max_final": 2}
    assert history[1]["detail"] == {"before": {"max_submissions": 2}, "after": {"max_submissions": None}}
    assert "event_edited spring" in cli("history").stdout


@pytest.mark.parametrize("args, message", [
    (["spring"], "error: event edit spring: nothing to change; give a rule's option "
                 "(--closes, --max-submissions, ...) or --clear RULE"),
    (["spring", "--clear", "colour"], "error: --clear colour: not a rule to clear; use one of opens, "
                                      "closes, public-opens, participants, min-interval, "
                                      "max-submissions, max-final"),
    (["spring", "--closes", "2999-01-01", "--clear", "closes"],
     "error: --closes and --clear closes contradict each other: give one"),
    (["spring", "--closes", "2020-01-01"],
     "error: --closes (2020-01-02 00:00 UTC) must be after --opens (2026-12-01 00:00 UTC)"),
    (["spring", "--max-final", "0"], "error: --max-final must be at least 1, got 0"),
    (["iris", "--closes", "2999-01-01"], "error: event 'iris' is problem 'iris''s default event, open "
                                         "to all: make an event with `datarun event add` for rules"),
    (["nope", "--closes", "2999-01-01"], "error: unknown event 'nope' (known: iris, spring)"),
])
def test_event_edit_refuses_in_one_line_and_changes_nothing(iris, cli, args, message):
    cli("event", "add", "spring", "--problem", "iris", "--opens", "2026-12-01")
    before = event(cli, "spring")
    result = cli("event", "edit", *args)
    assert (result.exit_code, result.stderr.strip()) == (2, message)
    assert event(cli, "spring") == before


def test_event_remove_takes_an_empty_event_and_refuses_one_with_submissions(iris, cli):
    cli("event", "add", "spring", "--problem", "iris")
    cli("event", "add", "summer", "--problem", "iris")
    submit_scored(iris, cli, "logreg", "ada", 0.9, "summer")
    result = cli("event", "remove", "spring", "--json")
    assert result.exit_code == 0 and validate(result.stdout) == "event-remove"
    assert result.json() == {"schema": "datarun/event-remove/1", "name": "spring", "problem": "iris",
                             "removed": True}
    refused = cli("event", "remove", "summer")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == (
        "error: event 'summer' has 1 submission: it cannot be removed; hide them (`datarun "
        "submission hide ID`) or close the event (`datarun event edit --closes`)")
    default = cli("event", "remove", "iris")
    assert default.stderr.strip() == ("error: event 'iris' is problem 'iris''s default event: it goes "
                                      "with the problem (`datarun problem remove`)")
    assert [e["name"] for e in cli("event", "list", "--json").json()["events"]] == ["iris", "summer"]


# -- hide / unhide ---------------------------------------------------------------------------


def test_a_hidden_submission_is_kept_but_off_the_boards_and_recorded(iris, cli):
    ada = submit_scored(iris, cli, "logreg", "ada", 0.9)
    grace = submit_scored(iris, cli, "knn", "grace", 0.95)
    assert board(cli) == [(1, "grace", grace), (2, "ada", ada)]
    result = cli("submission", "hide", str(grace), "--reason", "copied code", "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "submission-hide"
    assert (result.json()["id"], result.json()["hidden_reason"]) == (grace, "copied code")
    assert board(cli) == [(1, "ada", ada)]
    assert board(cli, "--private") == [(1, "ada", ada)]
    result = cli("submission", "show", str(grace), "--json")
    assert validate(result.stdout) == "submission"
    shown = result.json()
    assert shown["hidden_reason"] == "copied code" and shown["hidden_at"] is not None
    assert [e["submissions"] for e in cli("event", "list", "--json").json()["events"]] == [1]
    text = cli("submission", "show", str(grace)).stdout
    assert "hidden since " in text and ": copied code (off every board; `datarun submission unhide" in text
    assert cli("submission", "hide", str(grace)).stderr.strip() == (
        f"error: submission {grace} is hidden already (`datarun submission unhide {grace}` shows it again)")
    assert cli("submission", "unhide", str(grace)).exit_code == 0
    assert board(cli) == [(1, "grace", grace), (2, "ada", ada)]
    assert cli("submission", "unhide", str(grace)).stderr.strip() == f"error: submission {grace} is not hidden"
    history = cli("history", str(grace), "--json").json()["actions"]
    assert [(r["action"], r["detail"]) for r in history] == [
        ("submission_hidden", {"reason": "copied code"}), ("submission_unhidden", None)]


def test_a_hidden_submission_is_left_out_of_the_site(iris, cli, tmp_path):
    ada = submit_scored(iris, cli, "logreg", "ada", 0.9)
    grace = submit_scored(iris, cli, "knn", "grace", 0.95)
    cli("submission", "hide", str(grace))
    result = cli("site", tmp_path / "site")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "site" / "iris" / f"{ada}.html").exists()
    assert not (tmp_path / "site" / "iris" / f"{grace}.html").exists()
    assert "grace" not in (tmp_path / "site" / "iris" / "index.html").read_text()


# -- problem remove ------------------------------------------------------------------------------


def test_problem_remove_is_refused_while_it_has_submissions_unless_forced(iris, cli):
    cli("event", "add", "spring", "--problem", "iris")
    submit_scored(iris, cli, "logreg", "ada", 0.9, "spring")
    assert len(cli("event", "list", "--json").json()["events"]) == 2  # spring and the default event
    refused = cli("problem", "remove", "iris")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("error: problem 'iris' has 1 submission: pass --force to remove "
                                      "it with them (their scores and events go too)")
    assert [p["name"] for p in cli("problem", "list", "--json").json()["problems"]] == ["iris"]
    result = cli("problem", "remove", "iris", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "problem-remove"
    assert result.json() == {"schema": "datarun/problem-remove/1", "name": "iris", "removed": True,
                             "submissions": 1, "tasks": 5, "events": 2}
    assert cli("problem", "list", "--json").json()["problems"] == []
    assert cli("submission", "list", "--json").json()["submissions"] == []
    assert cli("event", "list", "--json").json()["events"] == []
    assert cli("history", "iris", "--json").json()["actions"][0]["action"] == "problem_removed"
    # The name is free again.
    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0


def test_problem_remove_is_refused_while_a_task_runs(iris, cli):
    sid = submit_scored(iris, cli, "logreg", "ada", 0.9)
    db = open_db(iris)
    with db.conn:
        db.execute("UPDATE tasks SET state = 'running', host = 'local' WHERE submission = ? AND fold = 0", [sid])
    refused = cli("problem", "remove", "iris", "--force")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("error: problem 'iris' has 1 task running: cancel its "
                                      "submissions first (`datarun cancel ID`)")
    assert cli("submission", "list", "--json").json()["submissions"][0]["id"] == sid


def test_an_unknown_problem_cannot_be_removed(iris, cli):
    assert cli("problem", "remove", "nope").stderr.startswith("error: unknown problem 'nope'")


# -- best per team, final choices ------------------------------------------------------------------


@pytest.fixture
def contest(iris, cli):
    cli("event", "add", "spring", "--problem", "iris", "--max-final", "1")
    return {
        "ada1": submit_scored(iris, cli, "logreg", "ada", 0.90, "spring", test=0.95),
        "ada2": submit_scored(iris, cli, "knn", "ada", 0.97, "spring", test=0.80),
        "grace": submit_scored(iris, cli, "random_forest", "grace", 0.95, "spring", test=0.90),
    }


def test_best_per_team_keeps_each_teams_best_and_ranks_again(contest, cli):
    ids = contest
    assert board(cli, "--event", "spring") == [(1, "ada", ids["ada2"]), (2, "grace", ids["grace"]),
                                                (3, "ada", ids["ada1"])]
    result = cli("leaderboard", "iris", "--event", "spring", "--best-per-team", "--json")
    assert validate(result.stdout) == "leaderboard" and result.json()["view"] == "best_per_team"
    assert [(r["rank"], r["id"]) for r in result.json()["rows"]] == [(1, ids["ada2"]), (2, ids["grace"])]
    assert result.json()["blend"] is None
    assert {r["contributivity"] for r in result.json()["rows"]} == {None}
    assert "not shown in this view" in result.stderr
    table = cli("leaderboard", "iris", "--best-per-team")
    assert table.exit_code == 0 and table.stdout.count("ada") == 1


def test_final_standings_take_the_best_public_by_default_and_a_teams_choice(contest, cli):
    ids = contest
    # No choice made: each team's best public submission, ranked by test score.
    assert board(cli, "--event", "spring", "--final") == [(1, "grace", ids["grace"]),
                                                          (2, "ada", ids["ada2"])]
    result = cli("submission", "select", str(ids["ada1"]), "--json")
    assert result.exit_code == 0, result.stderr
    assert validate(result.stdout) == "submission-select"
    assert result.json() == {"schema": "datarun/submission-select/1", "team": "ada", "event": "spring",
                             "submission_ids": [ids["ada1"]], "max_final": 1}
    result = cli("leaderboard", "iris", "--event", "spring", "--final", "--json")
    assert validate(result.stdout) == "leaderboard"
    final = result.json()
    assert final["view"] == "final"
    assert [(r["rank"], r["id"], r["final"]) for r in final["rows"]] == [
        (1, ids["ada1"], "chosen"), (2, ids["grace"], "best public")]
    assert final["rows"][0]["test"]["accuracy"] == 0.95
    assert cli("history", "ada", "--json").json()["actions"][0]["detail"] == {"event": "spring",
                                                                          "submission_ids": [ids["ada1"]]}


def test_submission_select_refusals(contest, iris, cli):
    ids = contest
    bob = submit_scored(iris, cli, "logreg", "bob", 0.5)
    cli("event", "add", "summer", "--problem", "iris")
    carol = submit_scored(iris, cli, "logreg", "carol", 0.5, "summer")
    cases = [
        ([ids["ada1"], ids["ada2"]], "error: 2 submissions chosen, but event 'spring' takes at most 1 "
                                     "final submissions a team"),
        ([ids["ada1"], ids["grace"]], f"error: submissions {ids['ada1']} and {ids['grace']} are not of one "
                                      "team in one event (ada in spring, grace in spring): a choice is one team's"),
        ([bob], "error: event 'iris' is problem 'iris''s default event and takes no final choice: every "
                "submission is on its private leaderboard (an event of its own takes one: `datarun event add "
                "NAME --problem iris --max-final N`)"),
        ([carol], "error: event 'summer' takes no final choice: every submission is on its private "
                  "leaderboard (`datarun event edit summer --max-final N` sets one)"),
        (["x"], "error: a submission id is a number, got 'x'"),
    ]
    for chosen, message in cases:
        result = cli("submission", "select", *map(str, chosen))
        assert (result.exit_code, result.stderr.strip()) == (2, message)
    cli("submission", "hide", str(ids["ada2"]))
    hidden = cli("submission", "select", str(ids["ada2"]))
    assert hidden.stderr.strip() == f"error: submission {ids['ada2']} is hidden: it cannot be a final submission"


@pytest.mark.parametrize("args, message", [
    (["--final"], "error: --final is an event's private leaderboard: give --event"),
    (["--event", "iris", "--final", "--best-per-team"], "error: --final and --best-per-team are two views: choose one"),
])
def test_leaderboard_view_refusals(iris, cli, args, message):
    result = cli("leaderboard", "iris", *args)
    assert (result.exit_code, result.stderr.strip()) == (2, message)


# -- host add local ----------------------------------------------------------------------------------


def test_host_add_local_undoes_host_remove_local(workspace, cli):
    assert cli("host", "remove", "local").exit_code == 0
    assert cli("host", "list", "--json").json()["hosts"] == []
    result = cli("host", "add", "local", "--slots", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["host"]["executor"] == "local"
    assert [(h["name"], h["executor"], h["slots"]) for h in cli("host", "list", "--json").json()["hosts"]] == [
        ("local", "local", 1)]


@pytest.mark.parametrize("args, message", [
    (["local", "--address", "x"], "error: host add local: --address is for SSH hosts; the local host "
                                  "is this machine (give --slots, --threads, --memory, --workdir, --tags, --gpus)"),
    (["local", "--trust"], "error: host 'local' is not an ssh host: --trust needs an ssh host"),
    (["node1"], "error: host add node1: give --address (an SSH host) or --dask (a Dask scheduler), one of them"),
    (["local"], "error: host 'local' is already in hosts.toml: pick another name, or run "
                "`datarun host remove local` first"),
])
def test_host_add_refusals(workspace, cli, args, message):
    if args != ["local"]:
        cli("host", "remove", "local")
    result = cli("host", "add", *args)
    assert (result.exit_code, result.stderr.strip()) == (2, message)
