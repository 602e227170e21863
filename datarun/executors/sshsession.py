"""A long-lived harness process on a host, spoken to one JSON line at a time.

Starting Python on the host for every dispatcher cycle costs tens of milliseconds of the
host's CPU and as much latency; a session starts `python -m datarun_remote session` once
per connection and then each `sync` is a line each way on the open channel: a channel of
the connection's transport (Fabric's, see `sshconn`). When the channel or its connection
dies, the next request opens a new one; every request has a timeout, enforced by the
connection's watchdog so a hung host cannot block past it.
"""

import json
import select
import time
from typing import Any

import paramiko

from datarun.errors import HostError
from datarun.executors.sshconn import READ_SLICE, SSHConnection, drained

MAX_ANSWER = 16 * 1024 * 1024  # an answer is a few kB; anything near this is not ours


class HarnessSession:
    def __init__(self, conn: SSHConnection, command: str, name: str) -> None:
        self.conn = conn
        self.command = command
        self.name = name
        self._channel: paramiko.Channel | None = None
        self._buffer = b""
        self.opened = 0

    def _open(self, timeout: float) -> None:
        transport = self.conn.transport()
        channel = transport.open_session(timeout=timeout)
        channel.exec_command(self.command)
        self._channel, self._buffer = channel, b""
        self.opened += 1
        self.conn.stats.commands += 1
        self.conn.stats.commands_run.append(self.command)

    def _alive(self) -> bool:
        channel = self._channel
        return (channel is not None and not channel.closed and not channel.exit_status_ready()
                and self.conn.transport().is_active())

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer line; HostError on any failure."""
        line = (json.dumps(payload) + "\n").encode()
        errors: list[bytes] = []
        with self.conn._watchdog(timeout, "a harness sync"):
            try:
                if not self._alive():
                    self._open(timeout)
                channel = self._channel
                assert channel is not None
                channel.settimeout(timeout)
                try:
                    channel.sendall(line)
                    self.conn.stats.bytes_sent += len(line)
                except OSError:
                    if not channel.closed:
                        raise
                    # The session ended before the request reached it (a `python` that prints
                    # and exits at once): what it said before ending is read below and named.
                deadline = time.monotonic() + timeout
                while b"\n" not in self._buffer:
                    select.select([channel], [], [], READ_SLICE)
                    # The cap is checked as bytes arrive, before anything else: a host that
                    # floods and exits must not pass for one that ended, nor fill memory.
                    while channel.recv_ready() and len(self._buffer) <= MAX_ANSWER:
                        self._buffer += channel.recv(1 << 16)
                    if len(self._buffer) > MAX_ANSWER and b"\n" not in self._buffer:
                        self.close()
                        raise HostError(f"host {self.name}: the harness session answered more "
                                        f"than {MAX_ANSWER} bytes")
                    while channel.recv_stderr_ready():
                        errors.append(channel.recv_stderr(1 << 16))
                        del errors[:-16]  # the last lines are what a message names
                    if b"\n" in self._buffer:
                        break
                    if channel.exit_status_ready() and drained(channel):
                        status = channel.recv_exit_status()
                        self._channel = None
                        raise HostError(self._ended(status, b"".join(errors)))
                    if time.monotonic() > deadline:
                        raise TimeoutError
            except HostError:
                self._channel = None
                raise
            except BaseException:
                self._channel = None
                raise
        answer, _, self._buffer = self._buffer.partition(b"\n")
        self.conn.stats.bytes_received += len(answer) + 1
        try:
            data = json.loads(answer)
        except ValueError:
            self.close()
            text = answer[-200:].decode(errors="replace")
            raise HostError(f"host {self.name}: the harness session answered no JSON: {text!r}") from None
        if not isinstance(data, dict):
            raise HostError(f"host {self.name}: the harness session answered {type(data).__name__}")
        if "error" in data:
            raise HostError(f"host {self.name}: harness sync failed: {data['error']}")
        return data

    def _ended(self, status: int, stderr: bytes) -> str:
        lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        tail = lines[-1] if lines else f"exit status {status}"
        return f"host {self.name}: the harness session ended ({tail})"

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:  # a dead channel may raise anything on close; it is gone
                pass
        self._channel = None
        self._buffer = b""
