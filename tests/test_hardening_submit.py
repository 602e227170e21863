"""`submit` reads regular files with one link only, opened without following a link and
without blocking, decided on the opened descriptor.

The attacks: a FIFO named estimator.py (it hung `submit` forever), a hard link to a file
outside the folder (its content was stored and shown as the participant's code), and a
symlink or FIFO swapped in between the first look at the folder and the open. The
negative controls run the same with the protection off. The plain refusals are also
corpus cases (tests/corpus/submissions/fifo, hard-link, symlink).
"""

import os
import stat
import threading

import pytest
from test_operator import GOOD, small_kit, write_submission

import datarun.challenge.submissions as submissions

SECRET = 'API_TOKEN = "organiser-s3cret"\n\ndef get_estimator():\n    return None\n'


@pytest.fixture
def flowers(workspace, cli, tmp_path):
    assert cli("problem", "add", small_kit(tmp_path)).exit_code == 0
    return workspace


def _submit_in_thread(cli, folder):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        result=cli("submit", "flowers", folder, "--team", "ada")), daemon=True)
    thread.start()
    return thread, outcome


def _wait_for_a_reader(fifo) -> int:
    """The write end of the FIFO, opened once someone holds its read end: that reader was
    blocked in open() (a non-blocking open would have returned and been refused)."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            threading.Event().wait(0.005)


def test_a_fifo_named_estimator_py_is_refused_without_hanging(flowers, cli, tmp_path, monkeypatch):
    folder = tmp_path / "fifo"
    folder.mkdir()
    fifo = folder / "estimator.py"
    os.mkfifo(fifo)
    thread, outcome = _submit_in_thread(cli, folder)
    thread.join(timeout=60)
    if thread.is_alive():  # a hang: let it go before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("submit hung on a FIFO")
    result = outcome["result"]
    assert result.exit_code == 2 and result.stderr == (
        "error: estimator.py is a FIFO (named pipe), not a regular file: submit plain files only\n")

    # Negative control: a first look that misses it (the FIFO swapped in after it) and a
    # blocking open, as the old code did: submit waits in open() for a writer.
    monkeypatch.setattr(submissions, "_refuse_unless_plain", lambda name, info: None)
    monkeypatch.setattr(submissions, "OPEN_FLAGS", os.O_RDONLY)
    thread, outcome = _submit_in_thread(cli, folder)
    writer = _wait_for_a_reader(fifo)
    try:
        assert thread.is_alive()  # it cannot finish a read while the write end is open and silent
    finally:
        os.close(writer)
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_fifo_swapped_in_after_the_first_look_is_refused_by_fstat(flowers, cli, tmp_path,
                                                                     monkeypatch):
    folder = tmp_path / "swap"
    folder.mkdir()
    os.mkfifo(folder / "estimator.py")
    regular = os.lstat(tmp_path / "flowers" / "problem.toml")
    real_lstat = os.lstat
    # The first look sees a regular file; the open finds the FIFO (the swap of a race).
    monkeypatch.setattr(os, "lstat", lambda path, *a, **k: regular if str(path).endswith(
        "swap/estimator.py") else real_lstat(path, *a, **k))
    thread, outcome = _submit_in_thread(cli, folder)
    thread.join(timeout=60)
    assert not thread.is_alive(), "the non-blocking open hung"
    assert outcome["result"].stderr == (
        "error: estimator.py is a FIFO (named pipe), not a regular file: submit plain files only\n")


def test_a_symlink_swapped_in_after_the_first_look_is_not_followed(flowers, cli, tmp_path,
                                                                   monkeypatch):
    secret = tmp_path / "organiser_secret.py"
    secret.write_text(SECRET)
    folder = tmp_path / "swap"
    folder.mkdir()
    os.symlink(secret, folder / "estimator.py")
    regular = os.lstat(secret)
    real_lstat = os.lstat
    monkeypatch.setattr(os, "lstat", lambda path, *a, **k: regular if str(path).endswith(
        "swap/estimator.py") else real_lstat(path, *a, **k))
    result = cli("submit", "flowers", folder, "--team", "ada")
    assert result.exit_code == 2 and result.stderr == (
        "error: estimator.py is a link; submit plain files only, nothing outside the folder\n")
    # Negative control: an open that follows links reads the organiser's file.
    monkeypatch.setattr(submissions, "OPEN_FLAGS", os.O_RDONLY | os.O_NONBLOCK)
    result = cli("submit", "flowers", folder, "--team", "ada", "--json")
    assert result.exit_code == 0
    code = cli("submission", "show", result.json()["id"], "--code", "--json").json()["files"]
    assert code["estimator.py"] == SECRET


def test_a_hard_link_to_a_file_outside_the_folder_is_refused(flowers, cli, tmp_path, monkeypatch):
    secret = tmp_path / "organiser_secret.py"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    folder = tmp_path / "linked"
    folder.mkdir()
    os.link(secret, folder / "estimator.py")
    result = cli("submit", "flowers", folder, "--team", "ada")
    assert result.exit_code == 2 and result.stderr == (
        "error: estimator.py has 2 hard links (its content is also elsewhere): submit a copy of "
        "its own\n")
    assert cli("submission", "list", "--json").json()["submissions"] == []
    # Negative control: without the link count, the organiser's file is stored as the code.
    monkeypatch.setattr(submissions, "_check_opened",
                        lambda name, info, *cap: submissions._refuse_unless_plain(name, info))
    result = cli("submit", "flowers", folder, "--team", "ada", "--json")
    assert result.exit_code == 0
    code = cli("submission", "show", result.json()["id"], "--code", "--json").json()["files"]
    assert code["estimator.py"] == SECRET


def test_a_plain_file_with_one_link_is_taken(flowers, cli, tmp_path):
    folder = write_submission(tmp_path, "good", GOOD)
    assert os.stat(folder / "estimator.py").st_nlink == 1
    assert stat.S_ISREG(os.stat(folder / "estimator.py").st_mode)
    assert cli("submit", "flowers", folder, "--team", "ada").exit_code == 0
