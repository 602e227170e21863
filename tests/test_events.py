"""Events: creating, listing and showing them, and every way `event add` refuses input."""

import pytest
from conftest import EXAMPLES

from datarun.challenge.events import format_span, parse_when

FUTURE, PAST = "2999-01-01", "2000-01-01"


@pytest.fixture
def iris(workspace, cli):
    result = cli("problem", "add", EXAMPLES / "iris")
    assert result.exit_code == 0, result.stderr
    return workspace


def events(cli):
    return {e["name"]: e for e in cli("event", "list", "--json").json()["events"]}


def test_the_default_event_is_open_to_all_with_no_limits(iris, cli):
    default = events(cli)["iris"]
    assert default["problem"] == "iris" and default["default"] is True
    assert default["state"] == "open" and default["scores_public"] is True
    assert [default[k] for k in ("opens_at", "closes_at", "participants", "min_interval",
                                 "max_submissions")] == [None] * 5


def test_add_stores_dates_as_utc_epoch_seconds_and_durations_as_seconds(iris, cli, tmp_path):
    teams = tmp_path / "teams.txt"
    teams.write_text("# the teams\nada\n\n  grace  \n")
    result = cli("event", "add", "spring", "--problem", "iris", "--opens", "2026-12-01",
                 "--closes", "2026-12-31T18:30+01:00", "--public-opens", "2026-12-15T09:00Z",
                 "--participants", teams, "--min-interval", "15m", "--max-submissions", "3", "--json")
    assert result.exit_code == 0, result.stderr
    event = result.json()
    assert event["opens_at"] == "2026-12-01T00:00:00Z"  # no zone means UTC
    assert event["closes_at"] == "2026-12-31T17:30:00Z"
    assert event["public_opens_at"] == "2026-12-15T09:00:00Z"
    assert event["participants"] == ["ada", "grace"]
    assert (event["min_interval"], event["max_submissions"], event["default"]) == (900.0, 3, False)
    shown = cli("event", "show", "spring", "--json").json()
    assert shown["opens_at"] == event["opens_at"] and shown["submissions"] == 0 and shown["by_team"] == []
    assert sorted(events(cli)) == ["iris", "spring"]


def test_a_csv_participants_file_is_read_by_its_team_column(iris, cli, tmp_path):
    teams = tmp_path / "teams.csv"
    teams.write_text("email,Team\nada@example.org,ada\n\ngrace@example.org, grace \n")
    result = cli("event", "add", "spring", "--problem", "iris", "--participants", teams, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["participants"] == ["ada", "grace"]


def test_list_and_show_print_tables(iris, cli):
    assert cli("event", "add", "winter", "--problem", "iris", "--closes", PAST).exit_code == 0
    assert cli("event", "add", "spring", "--problem", "iris", "--opens", FUTURE,
               "--min-interval", "2h", "--max-submissions", "5").exit_code == 0
    table = cli("event", "list").stdout
    assert "iris (default)" in table and "one per 2 hours, at most 5" in table
    assert {e["name"]: e["state"] for e in events(cli).values()} == {
        "iris": "open", "spring": "upcoming", "winter": "closed"}
    shown = cli("event", "show", "spring").stdout
    assert "event spring on iris — upcoming" in shown and "2999-01-01 00:00 UTC" in shown


def test_list_filters_by_problem(iris, cli):
    cli("event", "add", "spring", "--problem", "iris")
    assert [e["name"] for e in cli("event", "list", "--problem", "iris", "--json").json()["events"]] == [
        "iris", "spring"]


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--opens", "2026-13-01"], "--opens: '2026-13-01' is not an ISO 8601 date"),
        (["--closes", "next friday"], "--closes: 'next friday' is not an ISO 8601 date"),
        (["--opens", "2026-12-02T12:00", "--closes", "2026-12-01"],
         "--closes (2026-12-02 00:00 UTC) must be after --opens (2026-12-02 12:00 UTC)"),
        (["--opens", "2026-12-01T10:00+02:00", "--closes", "2026-12-01T08:00Z"],
         "--closes (2026-12-01 08:00 UTC) must be after --opens (2026-12-01 08:00 UTC)"),
        (["--opens", "2026-12-02", "--public-opens", "2026-12-01"],
         "--public-opens (2026-12-01 00:00 UTC) must not be before --opens"),
        (["--min-interval", "soon"], "--min-interval: expected a duration like '30s', '10m' or '2h'"),
        (["--min-interval", "15 fortnights"], "--min-interval: unknown time unit 'fortnights'"),
        (["--max-submissions", "0"], "--max-submissions must be at least 1, got 0"),
        (["--participants", "/no/such/teams.txt"], "participants file /no/such/teams.txt does not exist"),
    ],
)
def test_bad_event_settings_are_refused_and_nothing_is_stored(iris, cli, args, message):
    result = cli("event", "add", "spring", "--problem", "iris", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "spring" not in events(cli)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("teams.txt", "ada\n\tgrace\n", "teams.txt line 2: team '\\tgrace' holds U+0009, a control character: type the name without it"),
        ("teams.txt", "ada\n# x\nada\n", "teams.txt line 3: team 'ada' is listed twice (first on line 1)"),
        ("teams.txt", "ada\n" + "x" * 101 + "\n", "teams.txt line 2: team name longer than 100 characters"),
        ("teams.txt", b"ada\ngr\xe9ce\n", "teams.txt line 2: not UTF-8 text"),
        ("teams.txt", "# nobody yet\n\n", "teams.txt lists no teams"),
        ("teams.csv", "email,name\na@b,ada\n", "teams.csv line 1: no 'team' column in the header (email, name)"),
        ("teams.csv", "team,email\nada,a@b\ngrace\n", "teams.csv line 3: 1 fields, the header has 2"),
        ("teams.csv", "team,email\nada,a@b\n,g@b\n", "teams.csv line 3: empty team name"),
        ("teams.csv", 'team\nada\n"grace"x\n', "teams.csv line 3: ',' expected after '\"'"),
        ("teams.csv", 'team\nada\n"grace\n', "teams.csv line 3: unexpected end of data"),
        ("teams.csv", "team\n", "teams.csv lists no teams"),
    ],
)
def test_a_participants_file_that_does_not_parse_is_refused_with_its_line(
        iris, cli, tmp_path, name, data, message):
    result = cli("event", "add", "spring", "--problem", "iris", "--participants",
                 write(tmp_path, name, data))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "spring" not in events(cli)


@pytest.mark.parametrize(
    "args, message",
    [
        (["event", "add", "spring", "--problem", "nope"], "unknown problem 'nope'"),
        (["event", "add", "Spring 2026", "--problem", "iris"],
         "event name 'Spring 2026': use lowercase letters, digits, '-' and '_'"),
        (["event", "add", "iris", "--problem", "iris"],
         "event name 'iris' is taken by the default event of problem 'iris'"),
        (["event", "show", "autumn"], "unknown event 'autumn' (known: iris, spring)"),
        (["event", "list", "--problem", "nope"], "unknown problem 'nope'"),
    ],
)
def test_bad_event_names_and_unknown_things_are_refused(iris, cli, args, message):
    assert cli("event", "add", "spring", "--problem", "iris").exit_code == 0
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_duplicate_event_name_is_refused(iris, cli):
    assert cli("event", "add", "spring", "--problem", "iris", "--max-submissions", "2").exit_code == 0
    result = cli("event", "add", "spring", "--problem", "iris")
    assert result.exit_code == 2
    assert "event 'spring' already exists (on problem 'iris'); choose another name" in result.stderr
    assert events(cli)["spring"]["max_submissions"] == 2


def test_unknown_event_before_any_exists_says_how_to_add_one(workspace, cli):
    result = cli("event", "show", "spring")
    assert result.exit_code == 2
    assert "unknown event 'spring' (none yet: `datarun event add`)" in result.stderr


def test_dates_parse_with_and_without_zone():
    assert parse_when("2026-12-01", "--opens") == parse_when("2026-12-01T00:00Z", "--opens")
    assert parse_when("2026-12-01T09:00+02:00", "--opens") == parse_when("2026-12-01 07:00", "--opens")


def test_scores_are_public_from_the_public_opens_instant_included():
    from datarun.challenge.events import scores_public

    event = {"public_opens": parse_when("2027-06-01", "--public-opens")}
    assert not scores_public(event, event["public_opens"] - 0.001)
    assert scores_public(event, event["public_opens"])
    assert scores_public({"public_opens": None}, 0.0)


@pytest.mark.parametrize("seconds, words", [
    (0.2, "1 second"), (45, "45 seconds"), (119.5, "120 seconds"), (120, "2 minutes"),
    (900, "15 minutes"), (899.1, "15 minutes"), (5400, "90 minutes"), (7200, "2 hours"),
    (7260, "121 minutes"),
])
def test_spans_are_rounded_up_in_words(seconds, words):
    assert format_span(seconds) == words


def test_a_default_event_not_created_yet_can_be_shown(iris, cli):
    shown = cli("event", "show", "iris", "--json").json()
    assert shown["default"] is True and shown["state"] == "open" and shown["teams"] == 0


def test_a_problem_cannot_take_the_name_of_an_existing_event(workspace, cli, tmp_path):
    import shutil

    assert cli("problem", "add", EXAMPLES / "iris").exit_code == 0
    assert cli("event", "add", "spring", "--problem", "iris").exit_code == 0
    kit = tmp_path / "kit"
    shutil.copytree(EXAMPLES / "iris", kit)
    toml = kit / "problem.toml"
    toml.write_text(toml.read_text().replace('name = "iris"', 'name = "spring"'))
    result = cli("problem", "add", kit)
    assert result.exit_code == 2
    assert "'spring' is already the name of an event" in result.stderr
    assert [p["name"] for p in cli("problem", "list", "--json").json()["problems"]] == ["iris"]
