"""What a host sends back is unpacked as untrusted data, inside the task's folder only."""

import io
import tarfile

import pytest

from datarun.errors import HostError, UsageError
from datarun.executors.ssh import check_key, shell_and
from datarun.executors.tarsafe import extract_results


def archive(path, members):
    """members: (name, bytes | None for a folder | ("link", target))."""
    with tarfile.open(path, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_results_land_in_their_task_folders(tmp_path):
    path = archive(tmp_path / "r.tar", [("k1", None), ("k1/result.json", b"{}"),
                                        ("k1/y_pred_train.npy", b"x"), ("k2/output.log", b"log")])
    assert extract_results(path, tmp_path / "dest", ["k1", "k2"]) == ["k1"]
    assert (tmp_path / "dest" / "k1" / "y_pred_train.npy").read_bytes() == b"x"
    assert (tmp_path / "dest" / "k2" / "output.log").read_bytes() == b"log"


@pytest.mark.parametrize("members, message", [
    ([("/etc/evil", b"x")], "unsafe member '/etc/evil'"),
    ([("k1/../../evil", b"x")], r"unsafe member 'k1/../../evil'"),
    ([("k1/result.json", ("link", "/etc/passwd"))], "member 'k1/result.json' of the result archive is not a plain file"),
    ([("other/result.json", b"{}")], "unexpected member 'other/result.json'"),
    ([("k1/sub/result.json", b"{}")], "unexpected member 'k1/sub/result.json'"),
    ([("k1/result.json", b"x" * (1024**2 + 1))], "k1/result.json in the result archive is 1048577 bytes"),
])
def test_an_unsafe_archive_is_refused_whole(tmp_path, members, message):
    path = archive(tmp_path / "r.tar", [("k1/output.log", b"first"), *members])
    with pytest.raises(HostError, match=f"host: {message}"):
        extract_results(path, tmp_path / "dest", ["k1"])
    assert not (tmp_path / "dest").exists()  # nothing written before the check


def test_a_member_over_the_cap_is_refused(tmp_path):
    path = archive(tmp_path / "r.tar", [("k1/y_pred_train.npy", b"x" * 100)])
    with pytest.raises(HostError, match="is 100 bytes, over the 99-byte cap"):
        extract_results(path, tmp_path / "dest", ["k1"], max_member=99)


def test_a_broken_archive_is_refused(tmp_path):
    (tmp_path / "r.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(HostError, match="the result archive is unreadable"):
        extract_results(tmp_path / "r.tar", tmp_path / "dest", ["k1"])


def test_commands_are_built_from_quoted_arguments():
    assert shell_and(["cd", "/w d/$(x)"], ["python3", "-m", "m", "a;b", "`c`"]) == (
        "cd '/w d/$(x)' && python3 -m m 'a;b' '`c`'"
    )


@pytest.mark.parametrize("key", ["", "a b", "a;b", "..", "a/b", "$(x)"])
def test_task_keys_outside_the_protocol_are_refused(key):
    with pytest.raises(UsageError, match="bad task key"):
        check_key(key)
