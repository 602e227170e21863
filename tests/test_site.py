"""`datarun site`: what the pages show (public means public), incremental and atomic writes,
the folder rules, and that only this command imports Jinja2 and matplotlib.

The browser's view of the same pages is in tests/test_site_browser.py.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sitedata
from conftest import REPO

from datarun.store.db import open_db


@pytest.fixture
def site_ws(workspace, cli):
    ids = sitedata.make_workspace(workspace, cli)
    return workspace, ids


def build(cli, out, *args):
    result = cli("site", out, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result.json()


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def occurrences(text: str, number: float) -> list[str]:
    """Where a number appears, written as the pages write numbers, as a whole number
    (not inside a longer one)."""
    found = []
    for written in sitedata.formats(number):
        for match in re.finditer(rf"(?<![\d.]){re.escape(written)}(?!\d)", text):
            found.append(text[max(0, match.start() - 40):match.end() + 20])
    return found


# -- public means public ---------------------------------------------------------------------


def test_a_public_site_holds_no_private_number(site_ws, cli, tmp_path):
    _, ids = site_ws
    build(cli, tmp_path / "public")
    private = sitedata.private_numbers(cli, ids) | sitedata.whole_problem_numbers(cli)
    assert len(private) > 100  # test scores of 5 submissions, the secret event's, the blends
    public = cli("leaderboard", "iris", "--json").json()
    shown = {v for row in public["rows"] for key in ("valid", "valid_mean", "valid_std")
             for v in row[key].values() if v is not None}
    # The data keeps them apart, so a hit below is a leak, not a coincidence.
    assert not {f"{n:.4f}" for n in private} & {f"{n:.4f}" for n in shown}
    leaks = {}
    for name, data in files(tmp_path / "public").items():
        text = data.decode("utf-8")
        for number in private:
            if hits := occurrences(text, number):
                leaks.setdefault(name, []).append((number, hits[0]))
    assert not leaks
    text = b"".join(files(tmp_path / "public").values()).decode()
    assert "test accuracy" not in text and "node-secret-host" not in text
    assert sitedata.XSS_TEAM not in text  # escaped, below


def test_the_private_site_holds_them_all(site_ws, cli, tmp_path):
    """Negative control of the test above: the same search finds every private number
    written where the private site shows it."""
    _, ids = site_ws
    build(cli, tmp_path / "private", "--private")
    text = b"".join(files(tmp_path / "private").values()).decode()
    private = sitedata.private_numbers(cli, ids)
    missing = [n for n in private if not occurrences(text, n)]
    assert not missing
    assert "node-secret-host" in text


def test_an_event_before_its_public_opening_shows_no_score(site_ws, cli, tmp_path):
    workspace, ids = site_ws
    build(cli, tmp_path / "out")
    page = (tmp_path / "out" / "secret" / "index.html").read_text()
    assert "Scores are not public yet: they will be shown from 2999-01-01 00:00 UTC" in page
    assert 'class="plot"' not in page and "Blended" not in page
    row = re.search(rf'<tr id="s{ids["eve"]}".*?</tr>', page, re.S).group(0)
    assert re.findall(r'data-value="([^"]*)"', row)[:4] == ["", "", "", ""]  # rank, scores
    sub = (tmp_path / "out" / "secret" / f"{ids['eve']}.html").read_text()
    assert "Scores are not public yet" in sub and "spread.svg" not in sub
    assert not (tmp_path / "out" / "secret" / "spread.svg").exists()


def test_the_scores_of_an_event_appear_once_it_opens_publicly(site_ws, tmp_path):
    from datarun.site import build_site

    workspace, ids = site_ws
    db = open_db(workspace)
    out = tmp_path / "out"
    opening = 32472144000  # 2999-01-01, the secret event's public opening
    build_site(workspace, db, out, now=opening - 120)
    assert build_site(workspace, db, out, now=opening - 60)["written"] == []
    after = build_site(workspace, db, out, now=opening + 60)
    assert {"index.html", "secret/index.html", "secret/spread.svg",
            f"secret/{ids['eve']}.html"} <= set(after["written"])
    page = (out / "secret" / f"{ids['eve']}.html").read_text()
    shown = open_db(workspace).execute(
        "SELECT value FROM bagged_scores WHERE submission = ? AND split = 'valid' AND score = 'accuracy'",
        [ids["eve"]]).fetchone()[0]
    assert f"{shown:.4f}" in page and "Scores are not public yet" not in page
    assert "test accuracy" not in page


def test_an_events_page_shows_the_blend_of_its_own_submissions(site_ws, cli, tmp_path):
    build(cli, tmp_path / "out")
    page = (tmp_path / "out" / "spring" / "index.html").read_text()
    spring = sitedata.BLENDS["spring"][2]
    assert f'data-value="{spring[0]!r}">{spring[0]:.4f}' in page  # the spring blend, no other
    assert "blended score are not shown" not in page and 'aria-label="each submission' in page
    everyone = sitedata.BLENDS["*"][2]
    assert f"{everyone[0]:.4f}" not in page


def test_the_board_figures_rule():
    from datarun.site.model import _board_figures

    def board(*shares):
        return {"rows": [{"contributivity": s} for s in shares]}

    assert _board_figures(board(0.25, 0.75), False, True) == (True, None)
    assert _board_figures(board(0.25, 0.5), False, True)[0] is False
    shown, note = _board_figures(board(0.25, 0.5), False, False)
    assert shown and "over all of the problem's submissions" in note
    assert _board_figures(board(0.25, 0.5), True, True)[0] is True
    assert _board_figures(board(None, None), False, False) == (False, None)


def test_code_is_public_once_the_event_has_closed(site_ws, cli, tmp_path):
    _, ids = site_ws
    build(cli, tmp_path / "out")
    code = (sitedata.SUBMISSIONS / "logreg" / "estimator.py").read_text()
    closed = (tmp_path / "out" / "spring" / f"{ids['ada']}.html").read_text()
    assert "LogisticRegression(max_iter=1000)" in closed and "The code is" not in closed
    assert code.splitlines()[0] in closed
    never = (tmp_path / "out" / "iris" / f"{ids['bob']}.html").read_text()
    assert "LogisticRegression" not in never
    assert "The code is not published: the event has no closing date." in never
    build(cli, tmp_path / "private", "--private")
    assert "LogisticRegression" in (tmp_path / "private" / "iris" / f"{ids['bob']}.html").read_text()


def test_a_failed_fold_shows_its_error_tail_and_the_submission_is_listed_apart(site_ws, cli, tmp_path):
    _, ids = site_ws
    build(cli, tmp_path / "out")
    page = (tmp_path / "out" / "spring" / f"{ids['edsger']}.html").read_text()
    assert "Fold 2: fit_error" in page
    assert "ValueError: the forest refused fold two" in page
    board = (tmp_path / "out" / "spring" / "index.html").read_text()
    assert "Not on the leaderboard" in board
    assert f'<tr id="s{ids["edsger"]}"><td><a href="{ids["edsger"]}.html">' in board
    assert "failed (fit_error)" in board


def test_participants_text_is_escaped(site_ws, cli, tmp_path):
    _, ids = site_ws
    build(cli, tmp_path / "out")
    for path in ("iris/index.html", f"iris/{ids['bob']}.html"):
        text = (tmp_path / "out" / path).read_text()
        assert re.search(r"o(&#39;|&#x27;)hara &lt;script&gt;alert\(1\)&lt;/script&gt;", text)
        assert "<script>alert" not in text


def test_the_event_board_ranks_as_the_json_leaderboard(site_ws, cli, tmp_path):
    build(cli, tmp_path / "out")
    page = (tmp_path / "out" / "spring" / "index.html").read_text()
    rows = re.findall(r'<tr id="s(\d+)" data-id="\d+">\s*<td class="num" data-value="(\d*)">.*?'
                      r'<td class="num score" data-value="([^"]*)"', page, re.S)
    expected = cli("leaderboard", "iris", "--event", "spring", "--json").json()["rows"]
    assert [(int(i), int(r), float(s)) for i, r, s in rows] == [
        (row["id"], row["rank"], row["score"]) for row in expected if row["state"] == "scored"]


def test_no_file_refers_to_another_server(site_ws, cli, tmp_path):
    build(cli, tmp_path / "out", "--private")
    reference = re.compile(r'(?:\b(?:src|href|xlink:href|action|poster)\s*=\s*"([^"]*)"|url\(\s*([^)]*)\)|@import)')
    for name, data in files(tmp_path / "out").items():
        for match in reference.finditer(data.decode()):
            target = (match.group(1) or match.group(2) or "").strip("'\" ")
            assert match.group(0) != "@import", name
            assert not re.match(r"^(?:[a-z][a-z0-9+.-]*:|//)", target, re.I) or target == "data:,", (name, target)


# -- incremental, atomic, and the folder's rules ---------------------------------------------


def test_a_second_run_writes_nothing_and_a_new_submission_rewrites_only_its_pages(site_ws, cli, tmp_path):
    workspace, _ = site_ws
    out = tmp_path / "out"
    first = build(cli, out)
    assert first["written"] and first["unchanged"] == 0 and first["frames_drawn"] >= 4
    stats = {name: (out / name).stat().st_ino for name in files(out)}
    again = build(cli, out)
    assert again["written"] == [] and again["removed"] == [] and again["frames_drawn"] == 0
    assert {name: (out / name).stat().st_ino for name in files(out)} == stats
    sid = sitedata.submit(cli, "knn", "frances", "spring")
    sitedata.write_scores(workspace, sid, 0.81, seed=99)
    sitedata.join_blends(workspace, sid, ("*", "*public", "spring"))  # the blends left as they were
    update = build(cli, out)
    assert set(update["written"]) == {"index.html", "spring/index.html", "spring/spread.svg",
                                      f"spring/{sid}.html"}
    assert update["removed"] == []


def test_pages_that_should_no_longer_exist_are_deleted(site_ws, cli, tmp_path):
    workspace, ids = site_ws
    out = tmp_path / "out"
    build(cli, out)
    (out / "robots.txt").write_text("User-agent: *\n")  # the organiser's own file
    narrowed = build(cli, out, "--event", "spring")
    assert "secret/index.html" in narrowed["removed"] and f"iris/{ids['bob']}.html" in narrowed["removed"]
    assert not (out / "secret").exists() and not (out / "iris").exists()
    assert (out / "robots.txt").exists() and (out / "spring" / "index.html").exists()
    # A submission gone from the workspace's boards (here: its rows deleted) loses its page.
    db = open_db(workspace)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM contributivity WHERE submission = ?", [ids["grace"]])
        db.execute("DELETE FROM scores WHERE task IN (SELECT id FROM tasks WHERE submission = ?)", [ids["grace"]])
        for table, column in (("tasks", "submission"), ("bagged_scores", "submission"), ("submissions", "id")):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", [ids["grace"]])
    again = build(cli, out, "--event", "spring")
    assert again["removed"] == [f"spring/{ids['grace']}.html"]
    assert not (out / "spring" / f"{ids['grace']}.html").exists()
    assert f'href="{ids["grace"]}.html"' not in (out / "spring" / "index.html").read_text()


def test_a_run_that_dies_half_way_leaves_a_folder_the_next_run_finishes(site_ws, tmp_path, monkeypatch):
    from datarun.site import build as site_build
    from datarun.site import build_site

    workspace, _ = site_ws
    db = open_db(workspace)
    out = tmp_path / "out"
    real = site_build.write_atomic
    count = {"n": 0}

    def dies_on_the_fourth(path, data):
        count["n"] += 1
        if count["n"] == 4:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(site_build, "write_atomic", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        build_site(workspace, db, out)
    monkeypatch.setattr(site_build, "write_atomic", real)
    result = build_site(workspace, db, out)
    assert result["unchanged"] == 0  # nothing trusted from the dead run
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_writes_are_atomic(tmp_path, monkeypatch):
    from datarun.site.build import write_atomic

    page = tmp_path / "page.html"
    write_atomic(page, b"old")
    assert page.stat().st_mode & 0o777 == 0o644 & ~_umask()

    class Broken:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:2])
            raise OSError(28, "No space left on device")

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Broken(real_fdopen(fd, mode)))
    with pytest.raises(OSError):
        write_atomic(page, b"new page")
    assert page.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_two_runs_at_once_take_turns(site_ws, tmp_path):
    workspace, _ = site_ws
    out = tmp_path / "out"
    command = [str(Path(sys.executable).with_name("datarun")), "site", str(out), "--json"]
    env = dict(os.environ, DATARUN_HOME=str(workspace.root))
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)]
    results = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [r[1] for r in results]
    written = sorted(len(json.loads(stdout)["written"]) for stdout, _ in results)
    assert written[0] == 0 and written[1] > 0  # the second waited, then found it all done
    manifest = json.loads((out / ".datarun-site" / "manifest.json").read_text())
    assert set(manifest["pages"]) == set(files(out)) - {".datarun-site/manifest.json",
                                                         ".datarun-site/lock"} - {
        n for n in files(out) if n.startswith(".datarun-site/frames/")}


@pytest.mark.parametrize("setup, args, message", [
    (lambda out: out.write_text("x"), [], "is a file: give `datarun site` a folder"),
    (lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), [],
     "is not empty and holds no datarun site: choose a new or empty folder"),
    (None, ["--problem", "nope"], "unknown problem 'nope'"),
    (None, ["--event", "nope"], "unknown event 'nope'"),
    (None, ["--problem", "iris", "--event", "other"], "event 'other' is for problem 'other', not 'iris'"),
])
def test_bad_site_arguments_are_refused(site_ws, cli, tmp_path, setup, args, message):
    out = tmp_path / "out"
    if setup:
        setup(out)
    if "other" in args:
        other = REPO / "examples" / "diabetes"
        assert cli("problem", "add", other).exit_code == 0
        assert cli("event", "add", "other", "--problem", "diabetes").exit_code == 0
        message = message.replace("problem 'other'", "problem 'diabetes'")
    result = cli("site", out, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_folder_keeps_its_kind_of_site(site_ws, cli, tmp_path):
    build(cli, tmp_path / "public")
    result = cli("site", tmp_path / "public", "--private")
    assert result.exit_code == 2
    assert result.stderr == (f"error: {tmp_path / 'public'} holds a public site: write the private one "
                             f"to another folder (or remove {tmp_path / 'public'} first)\n")
    assert "test accuracy" not in (tmp_path / "public" / "spring" / "index.html").read_text()
    build(cli, tmp_path / "private", "--private")
    result = cli("site", tmp_path / "private")
    assert result.exit_code == 2 and "holds a private site: write the public one" in result.stderr


def test_a_manifest_it_did_not_write_is_refused(site_ws, cli, tmp_path):
    out = tmp_path / "out"
    build(cli, out)
    (out / ".datarun-site" / "manifest.json").write_text("{not json")
    result = cli("site", out)
    assert result.exit_code == 2
    assert "manifest.json is not a manifest this datarun wrote: remove" in result.stderr


def test_the_command_prints_the_index_path(site_ws, cli, tmp_path):
    result = cli("site", tmp_path / "out")
    assert result.exit_code == 0
    assert result.stdout == f"{tmp_path / 'out' / 'index.html'}\n"
    assert result.stderr.startswith("site: ") and "files written, 0 unchanged, 0 removed" in result.stderr


def test_an_empty_workspace_gets_an_index(workspace, cli, tmp_path):
    data = build(cli, tmp_path / "out")
    assert set(data["written"]) == {"index.html", "style.css"}
    assert "No problem is registered yet." in (tmp_path / "out" / "index.html").read_text()


# -- plots ---------------------------------------------------------------------------------


def test_limits_are_rounded_out_so_values_inside_do_not_move_them():
    from datarun.site.plots import log_limits, nice_limits, time_limits

    assert nice_limits([0.8123, 0.9561]) == (0.8, 1.0)
    assert nice_limits([0.8123, 0.9561, 0.9]) == nice_limits([0.8123, 0.9561])
    assert nice_limits([3.0, 3.0]) == (2.75, 3.25) or nice_limits([3.0, 3.0])[0] < 3.0 < nice_limits([3.0, 3.0])[1]
    lo, hi = time_limits([1_800_000_030.0, 1_800_000_090.0])
    assert lo <= 1_800_000_030 and hi >= 1_800_000_090 and lo % 60 == 0 and hi % 60 == 0
    assert log_limits([0.2, 3.5]) == (0.1, 10.0)


def test_marks_are_placed_where_matplotlib_draws_the_axes():
    """The mapping datarun uses for marks is matplotlib's for the same frame."""
    import matplotlib
    from matplotlib.figure import Figure

    from datarun.site.plots import frame, mapping

    spec = frame(300, (70, 20, 12, 42), {"scale": "log", "lim": [0.1, 100.0], "label": ""},
                 {"scale": "linear", "lim": [0.8, 1.0], "label": ""})
    fx, fy = mapping(spec)
    with matplotlib.rc_context({}):
        figure = Figure(figsize=(720 / 72, 300 / 72), dpi=72)
        axes = figure.add_axes((70 / 720, 42 / 300, 630 / 720, 246 / 300))
        axes.set_xscale("log")
        axes.set_xlim(0.1, 100.0)
        axes.set_ylim(0.8, 1.0)
        for x, y in ((0.1, 0.8), (3.0, 0.93), (100.0, 1.0)):
            px, py = axes.transData.transform((x, y))
            assert fx(x) == pytest.approx(px, abs=0.01)
            assert fy(y) == pytest.approx(300 - py, abs=0.01)  # SVG's y runs down


def test_matplotlib_is_not_imported_when_the_frames_are_cached(site_ws, tmp_path):
    workspace, _ = site_ws
    out = tmp_path / "out"
    code = ("import sys; from datarun.cli import app; sys.argv = ['datarun', 'site', sys.argv[1]];\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('matplotlib' in sys.modules, 'jinja2' in sys.modules)")
    env = dict(os.environ, DATARUN_HOME=str(workspace.root))
    first = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env)
    assert first.stdout.splitlines()[-1] == "True True", first.stderr
    (out / "spring" / "index.html").unlink()  # one page to write again, its frames cached
    second = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env)
    assert second.stdout.splitlines()[-1] == "False True", second.stderr
    assert "1 files written" in second.stderr


# -- what other commands pay -----------------------------------------------------------------


def test_other_commands_do_not_import_jinja2_or_matplotlib(workspace):
    code = ("import sys; import datarun.cli; from datarun.cli import app\n"
            "sys.argv = ['datarun', 'status', '--json']\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('jinja2', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, DATARUN_HOME=str(workspace.root)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_a_submissions_public_view_holds_no_test_score(site_ws, cli):
    """The core rule the site reads its details by (datarun/board/views.py), for any caller."""
    from datarun.board.views import submission_view, visible_splits
    from datarun.challenge.submissions import describe_submission

    workspace, ids = site_ws
    details = describe_submission(workspace, open_db(workspace), ids["ada"])
    assert "test" in details["bagged"] and "test" in details["tasks"][0]["scores"]
    public = submission_view(details, private=False, scores_public=True)
    assert set(public["bagged"]) == {"valid"} and not public["scores_hidden"]
    assert all(set(task["scores"]) == {"train", "valid"} for task in public["tasks"])
    before = submission_view(details, private=False, scores_public=False)
    assert before["bagged"] == {} and before["scores_hidden"]
    assert all(task["scores"] == {} for task in before["tasks"])
    assert submission_view(details, private=True, scores_public=False)["bagged"] == details["bagged"]
    assert "test" in details["bagged"]  # the caller's copy is untouched
    assert visible_splits(False, True) == ("train", "valid") and visible_splits(True, False)[-1] == "test"


def test_control_characters_in_an_error_never_reach_a_page(site_ws, cli, tmp_path):
    workspace, ids = site_ws
    db = open_db(workspace)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute("UPDATE tasks SET error = ? WHERE submission = ? AND state = 'failed'",
                   ["Traceback\nValueError: evil\x1b]52;c;aGk=\x07 \u202eexe.txt\x1b[2J", ids["edsger"]])
    build(cli, tmp_path / "out")
    page = (tmp_path / "out" / "spring" / f"{ids['edsger']}.html").read_text()
    assert "ValueError: evil" in page and "exe.txt" in page
    assert "\x1b" not in page and "\u202e" not in page and "\x07" not in page
