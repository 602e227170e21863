"""`.datarun/leftovers.json`: attempts given up on, per host, with the nonce each was sent with."""

import json

from datarun.dispatch.lanes import Leftovers


def test_leftovers_keep_each_attempts_nonce_across_restarts(tmp_path):
    path = tmp_path / "leftovers.json"
    leftovers = Leftovers(path)
    leftovers.add("node", {"t1-a1": "n1", "t2-a1": "n2"})
    leftovers.add("node", {"t1-a1": "other"})  # known already: the first nonce stays
    leftovers.add("gpu", {})
    again = Leftovers(path)  # a dispatcher started later reads the same
    assert again.keys("node") == ["t1-a1", "t2-a1"] and again.keys("gpu") == []
    assert (again.nonce("node", "t1-a1"), again.nonce("node", "t2-a1")) == ("n1", "n2")
    assert again.nonce("node", "t9-a1") is None and again.nonce("elsewhere", "t1-a1") is None
    again.forget("node", ["t1-a1", "t2-a1"])
    assert json.loads(path.read_text()) == {}


def test_a_file_from_before_nonces_is_read_with_no_nonce_known(tmp_path):
    path = tmp_path / "leftovers.json"
    path.write_text(json.dumps({"node": ["t1-a1", "t3-a2"]}))
    leftovers = Leftovers(path)
    assert leftovers.keys("node") == ["t1-a1", "t3-a2"]
    assert leftovers.nonce("node", "t1-a1") is None  # so no late result of it is taken
    leftovers.add("node", {"t4-a1": "n4"})
    assert json.loads(path.read_text()) == {"node": {"t1-a1": None, "t3-a2": None, "t4-a1": "n4"}}
