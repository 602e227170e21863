"""Sending a big data set to one host from a process of its own.

paramiko frames, encrypts and checks every SSH packet in Python: the uploads of four
hosts on threads of one process share one core under the GIL, while four `scp` use both
cores (and, on a machine others use too, four shares of it). A data set of at least
PROCESS_FROM bytes is therefore sent to each host by a child Python of its own
(`python -m datarun.executors.shipsend`, a JSON request on stdin, one JSON line back),
over its own connection made by the same `SSHConnection`: the host key checked against
the same known_hosts files and pins, the same socket options and timeouts. The parent
waits at most the transfer's timeout and then kills it. Smaller data sets go over the
lane's own connection: a child's start (its imports, a new connection) costs ~0.2 s.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from datarun.errors import DatarunError, HostError
from datarun.executors.shipping import send_data
from datarun.executors.sshconn import SSHConnection, Target

PROCESS_FROM = 64 * 1024**2


def target_json(target: Target) -> dict[str, Any]:
    return dataclasses.asdict(target)


def target_from_json(data: dict[str, Any]) -> Target:
    jump = target_from_json(data["jump"]) if data.get("jump") else None
    return Target(**{**data, "identities": tuple(data.get("identities") or ()), "jump": jump})


def send_from_child(target: Target, known_hosts: Path | None, kind: str, local: Path, remote: str,
                    timeout: float) -> tuple[int, int]:
    """`send_data` in a child process; (bytes already there, bytes sent)."""
    request = {"target": target_json(target), "known_hosts": str(known_hosts) if known_hosts else None,
               "kind": kind, "local": str(local), "remote": remote, "timeout": timeout}
    child = subprocess.Popen([sys.executable, "-m", "datarun.executors.shipsend"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = child.communicate(json.dumps(request), timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise HostError(f"host {target.name}: an upload timed out after {timeout:g}s (the host hangs "
                        "or is overloaded)") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (err.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise HostError(f"host {target.name}: the upload's process failed: {tail}") from None
    if "error" in answer:
        raise HostError(str(answer["error"]))
    return int(answer["have"]), int(answer["sent"])


def main() -> int:
    request = json.loads(sys.stdin.read())
    target = target_from_json(request["target"])
    known = Path(request["known_hosts"]) if request.get("known_hosts") else None
    conn = SSHConnection(target, known)
    try:
        have, sent = send_data(conn, request["kind"], Path(request["local"]), request["remote"],
                               float(request["timeout"]))
    except DatarunError as error:
        print(json.dumps({"error": str(error)}))
        return 1
    finally:
        conn.close()
    print(json.dumps({"have": have, "sent": sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
