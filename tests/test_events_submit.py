"""`submit` enforces the rules of the event it goes to; `--force` overrides them, on record."""

import pytest
from conftest import EXAMPLES

from datarun.challenge.events import rule_violations

SUBMISSIONS = EXAMPLES / "iris" / "submissions"
LOGREG, KNN, FOREST = SUBMISSIONS / "logreg", SUBMISSIONS / "knn", SUBMISSIONS / "random_forest"
FUTURE, PAST = "2999-01-01", "2000-01-01"


@pytest.fixture
def iris(workspace, cli):
    result = cli("problem", "add", EXAMPLES / "iris")
    assert result.exit_code == 0, result.stderr
    return workspace


def add_event(cli, *args, name="spring"):
    result = cli("event", "add", name, "--problem", "iris", *args)
    assert result.exit_code == 0, result.stderr


def submissions(cli):
    return cli("submission", "list", "--json").json()["submissions"]


def refused(result, message):
    assert result.exit_code == 2
    assert message in result.stderr
    assert "(an organiser can override with --force)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    return True


def test_without_event_a_submission_goes_to_the_problems_default_event(iris, cli):
    data = cli("submit", "iris", LOGREG, "--team", "ada", "--json").json()
    assert (data["event"], data["forced"]) == ("iris", None)
    assert cli("submission", "show", str(data["id"]), "--json").json()["event"] == "iris"
    shown = cli("event", "show", "iris", "--json").json()
    assert (shown["submissions"], shown["teams"]) == (1, 1)


def test_an_event_not_open_yet_says_when_it_opens(iris, cli):
    add_event(cli, "--opens", "2999-01-01T09:30")
    assert refused(cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring"),
                   "event 'spring' is not open yet: it opens 2999-01-01 09:30 UTC")
    assert submissions(cli) == []


def test_a_closed_event_says_when_it_closed(iris, cli):
    add_event(cli, "--opens", "1999-12-01", "--closes", PAST)
    assert refused(cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring"),
                   "event 'spring' closed 2000-01-02 00:00 UTC")
    assert submissions(cli) == []


def test_only_participants_may_submit(iris, cli, tmp_path):
    teams = tmp_path / "teams.txt"
    teams.write_text("ada\ngrace\n")
    add_event(cli, "--participants", teams)
    assert refused(cli("submit", "iris", LOGREG, "--team", "eve", "--event", "spring"),
                   "team 'eve' is not a participant of event 'spring'")
    assert cli("submit", "iris", LOGREG, "--team", "grace", "--event", "spring").exit_code == 0
    assert [s["team"] for s in submissions(cli)] == ["grace"]


def test_a_team_waits_the_minimum_interval_between_submissions(iris, cli):
    add_event(cli, "--min-interval", "15m")
    assert cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring").exit_code == 0
    assert refused(cli("submit", "iris", KNN, "--team", "ada", "--event", "spring"),
                   "wait 15 minutes: event 'spring' takes one submission per team every 15 minutes")
    # The interval is per team, and per event.
    assert cli("submit", "iris", KNN, "--team", "grace", "--event", "spring").exit_code == 0
    assert cli("submit", "iris", KNN, "--team", "ada").exit_code == 0
    assert len(submissions(cli)) == 3


def test_a_team_stops_at_the_submission_limit(iris, cli):
    add_event(cli, "--max-submissions", "2")
    for folder in (LOGREG, KNN):
        assert cli("submit", "iris", folder, "--team", "ada", "--event", "spring").exit_code == 0
    assert refused(cli("submit", "iris", FOREST, "--team", "ada", "--event", "spring"),
                   "limit reached: team 'ada' has made 2 of the 2 submissions event 'spring' allows")
    assert len(submissions(cli)) == 2


def test_an_identical_resubmission_is_recognised_before_the_rules_apply(iris, cli):
    add_event(cli, "--max-submissions", "1")
    first = cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring", "--json").json()
    again = cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring", "--json")
    assert again.exit_code == 0
    assert again.json()["created"] is False and again.json()["id"] == first["id"]


def test_an_organiser_forces_past_the_rules_and_the_override_is_recorded(iris, cli, tmp_path):
    teams = tmp_path / "teams.txt"
    teams.write_text("ada\n")
    add_event(cli, "--opens", "1999-12-01", "--closes", PAST, "--participants", teams)
    result = cli("submit", "iris", LOGREG, "--team", "eve", "--event", "spring", "--force")
    assert result.exit_code == 0, result.stderr
    assert "forced past the event's rules: event 'spring' closed 2000-01-02 00:00 UTC; " \
           "team 'eve' is not a participant" in result.stderr
    sid = submissions(cli)[0]["id"]
    shown = cli("submission", "show", str(sid), "--json").json()
    assert shown["event"] == "spring"
    assert shown["forced"].startswith("event 'spring' closed 2000-01-02 00:00 UTC; team 'eve'")
    assert "submitted with --force, overriding: event 'spring' closed" in cli(
        "submission", "show", str(sid)).stdout
    assert cli("event", "show", "spring", "--json").json()["by_team"][0]["forced"] == 1


def test_force_records_nothing_when_no_rule_was_broken(iris, cli):
    data = cli("submit", "iris", LOGREG, "--team", "ada", "--force", "--json").json()
    assert data["forced"] is None
    assert cli("submission", "show", str(data["id"]), "--json").json()["forced"] is None


def test_an_unknown_event_or_another_problems_event_is_refused(iris, cli):
    assert cli("problem", "add", EXAMPLES / "diabetes").exit_code == 0
    cli("event", "add", "spring", "--problem", "diabetes")
    result = cli("submit", "iris", LOGREG, "--team", "ada", "--event", "autumn")
    assert result.exit_code == 2 and "unknown event 'autumn'" in result.stderr
    result = cli("submit", "iris", LOGREG, "--team", "ada", "--event", "spring")
    assert result.exit_code == 2
    assert "event 'spring' is for problem 'diabetes', not 'iris'" in result.stderr
    assert cli("submit", "iris", LOGREG, "--team", "ada", "--event", "diabetes").exit_code == 2
    assert submissions(cli) == []


def test_an_event_named_like_a_later_problem_is_refused_at_registration(iris, cli):
    add_event(cli, name="diabetes")
    result = cli("problem", "add", EXAMPLES / "diabetes")
    assert result.exit_code == 2
    assert "'diabetes' is already the name of an event" in result.stderr


def test_a_workspace_where_an_event_took_a_problems_name_asks_for_an_event(iris, cli):
    # Workspaces from before registration refused such names: the clash is named, not fatal.
    assert cli("problem", "add", EXAMPLES / "diabetes").exit_code == 0
    add_event(cli, name="spring")
    from datarun.store.db import open_db
    from datarun.store.workspace import find_workspace

    db = open_db(find_workspace())
    db.execute("DELETE FROM events WHERE problem = 'diabetes'")
    db.execute("UPDATE events SET name = 'diabetes' WHERE name = 'spring'")
    folder = EXAMPLES / "diabetes" / "submissions" / "linear"
    result = cli("submit", "diabetes", folder, "--team", "ada")
    assert result.exit_code == 2
    assert ("event 'diabetes' of problem 'iris' has the name of this problem's default event; "
            "submit with --event") in result.stderr
    cli("event", "add", "open", "--problem", "diabetes")
    assert cli("submit", "diabetes", folder, "--team", "ada", "--event", "open").exit_code == 0


EVENT = {"name": "e", "opens": 100.0, "closes": 200.0, "participants": ["ada"],
         "min_interval": 60.0, "max_submissions": 2}


@pytest.mark.parametrize(
    "team, times, now, rules",
    [
        ("ada", [], 150.0, []),
        ("ada", [], 99.0, ["not_open"]),
        ("ada", [], 100.0, []),  # opens: included
        ("ada", [], 199.9, []),
        ("ada", [], 200.0, ["closed"]),  # closes: excluded
        ("eve", [], 150.0, ["not_participant"]),
        ("ada", [100.0], 159.0, ["wait"]),
        ("ada", [100.0], 160.0, []),
        ("ada", [100.0, 110.0], 190.0, ["limit"]),
        ("eve", [140.0, 150.0], 250.0, ["closed", "not_participant", "limit"]),
    ],
)
def test_rule_violations_as_values(team, times, now, rules):
    assert [v.rule for v in rule_violations(EVENT, team, times, now)] == rules


def test_the_wait_is_rounded_up_to_what_is_left():
    (violation,) = rule_violations(EVENT, "ada", [130.0], 150.0)
    assert violation.message.startswith("wait 40 seconds: event 'e' takes one submission per team "
                                        "every 60 seconds")
