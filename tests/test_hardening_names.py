"""Names are NFKC-normalised and invisible characters refused: no team poses as another.

The attacks: a team named with a right-to-left override (it shows as another name), a
zero-width space (two teams that look the same), full-width letters (the same name,
another string). Each is refused or folded into the name it spells; the negative control
stores the same names when the check is off. The refusals of each category are cases of
tests/corpus/ (submissions/team-*, submissions/name-*, participants/*).
"""

import pytest
from test_operator import GOOD, small_kit, write_submission

from datarun.safetext import check_name


@pytest.fixture
def flowers(workspace, cli, tmp_path):
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    return workspace


def submit(cli, tmp_path, team: str, name: str = "good", *extra: str):
    folder = tmp_path / "subs" / name
    if not folder.exists():
        write_submission(tmp_path / "subs", name, GOOD)
    return cli("submit", "flowers", folder, "--team", team, *extra, "--json")


@pytest.mark.parametrize("raw, stored", [
    ("ada", "ada"),
    ("  ada lovelace  ", "ada lovelace"),      # spaces around a name are dropped
    ("\uff41\uff44\uff41", "ada"),              # full-width letters
    ("\ufb01sher", "fisher"),                   # the fi ligature
    ("ada\u00a0lovelace", "ada lovelace"),      # no-break space
    ("Ame\u0301lie", "Amélie"),                 # decomposed accent, composed
    ("\u2460", "1"),                            # circled digit one
    ("李小龍", "李小龍"),
])
def test_names_are_nfkc_normalised_and_trimmed(raw, stored):
    assert check_name(raw, "team") == stored


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\u200d", "\u00ad", "\ufeff",
                                  "\x00", "\x1b", "\t", "\n", "\x85", "\u2028", "\u2029",
                                  "\udcff"])
def test_invisible_and_control_characters_are_refused(char):
    with pytest.raises(Exception, match=rf"holds U\+{ord(char):04X}"):
        check_name(f"ada{char}x", "team")


def test_a_team_posing_with_a_bidi_override_is_refused_and_nothing_is_stored(flowers, cli, tmp_path,
                                                                              monkeypatch):
    result = submit(cli, tmp_path, "\u202enimda")  # shows as "admin" on a terminal
    assert result.exit_code == 2 and result.json()["error"]["exit_code"] == 2
    assert result.stderr == ("error: team '\\u202enimda' holds U+202E RIGHT-TO-LEFT OVERRIDE, "
                             "an invisible formatting character: type the name without it\n")
    assert cli("submission", "list", "--json").json()["submissions"] == []
    # The same folder name as the submission's name (its default) is checked too.
    write_submission(tmp_path / "subs", "good\u200b", GOOD)
    result = submit(cli, tmp_path, "ada", "good\u200b")
    assert result.exit_code == 2
    assert result.stderr == ("error: submission name 'good\\u200b' holds U+200B ZERO WIDTH SPACE, "
                             "an invisible formatting character: type the name without it\n")
    # Negative control: without the check the impostor is stored as a team of its own.
    import datarun.challenge.submissions as submissions

    monkeypatch.setattr(submissions, "check_name", lambda value, what: value.strip())
    assert submit(cli, tmp_path, "\u202enimda").exit_code == 0
    assert [row["team"] for row in cli("submission", "list", "--json").json()["submissions"]] == ["\u202enimda"]


def test_a_full_width_spelling_is_the_same_team(flowers, cli, tmp_path, monkeypatch):
    first = submit(cli, tmp_path, "ada").json()
    again = submit(cli, tmp_path, "\uff41\uff44\uff41 ").json()
    assert again["team"] == "ada" and again["created"] is False and again["id"] == first["id"]
    # Negative control: compared as raw strings, it would be another team.
    import datarun.challenge.submissions as submissions

    monkeypatch.setattr(submissions, "check_name", lambda value, what: value.strip())
    other = submit(cli, tmp_path, "\uff41\uff44\uff41").json()
    assert other["created"] is True and other["team"] == "\uff41\uff44\uff41"


def test_participants_and_events_are_normalised_like_teams(flowers, cli, tmp_path):
    teams = tmp_path / "teams.txt"
    teams.write_text("\uff41\uff44\uff41\n  grace \n", encoding="utf-8")
    result = cli("event", "add", "\uff53\uff50\uff52\uff49\uff4e\uff47", "--problem", "flowers",
                 "--participants", teams, "--json")
    assert result.exit_code == 0, result.stderr
    event = result.json()
    assert event["name"] == "spring" and event["participants"] == ["ada", "grace"]
    assert submit(cli, tmp_path, "ada", "good", "--event", "spring").exit_code == 0
    assert cli("event", "show", "\uff53\uff50\uff52\uff49\uff4e\uff47", "--json").json()["submissions"] == 1
    refused = cli("event", "add", "aut\u200bumn", "--problem", "flowers")
    assert refused.exit_code == 2
    assert refused.stderr == ("error: event name 'aut\\u200bumn' holds U+200B ZERO WIDTH SPACE, an "
                              "invisible formatting character: type the name without it\n")
