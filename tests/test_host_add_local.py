"""`host add local` says what to do next for this machine: check it; there is no SSH key
to pin (`host trust` is for SSH hosts)."""


def test_host_add_local_proposes_a_check_not_a_key_to_trust(workspace, cli):
    assert cli("host", "remove", "local").exit_code == 0
    result = cli("host", "add", "local")
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == ["Added host local.",
                                                  "Check it with `datarun host check local`."]
    ssh = cli("host", "add", "node1", "--address", "node1.example.org")
    assert ssh.stderr.strip().splitlines()[-1] == (
        "Check it with `datarun host check node1` (pin its key with `datarun host trust node1`).")
