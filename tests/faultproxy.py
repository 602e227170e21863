"""Fault injection for the fault tests and bench/soak: a loopback TCP proxy, and crashed
and hung SSH hosts. The small workspace they act on is faultcluster.py.

`FaultProxy` sits between datarun and an sshd, both on 127.0.0.1, and on command stalls
(holds every byte), drops (swallows bytes, so the SSH stream breaks as on a corrupting
link), cuts (resets every open connection, or one after N bytes), refuses new
connections, or points at another upstream port (an sshd restarted elsewhere keeps its
address). `tc netem` is not available here and links must never go down (packets would
leave the machine), so faults are made in user space on loopback only.

A host crash kills the sshd, its session processes and the harness runner with its task
processes (SIGKILL, as power loss would); a hang SIGSTOPs the same processes. Both find
the runner by the PID it records in the host's runner.json, read directly: the tests run
as root on the machine that plays every host.
"""

import json
import pwd
import shutil
import signal
import socket
import struct
import threading
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
CHUNK = 1 << 16


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose connections can be stalled, broken and cut on command."""

    def __init__(self, upstream_port: int, port: int = 0):
        self.upstream_port = upstream_port
        self._listener = socket.create_server((LOOPBACK, port))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared while stalled
        self._flowing.set()
        self.dropping = False
        self.refusing = False
        self._cut_after: int | None = None  # bytes towards the client before a one-shot cut
        self._cut_after_up: int | None = None  # bytes towards the server before a one-shot cut
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.cuts = 0
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"faultproxy-{self.port}")
        self._thread.start()

    # --- commands -----------------------------------------------------------------

    def stall(self) -> None:
        """Hold every byte in both directions, on open and new connections, until resume()."""
        self._flowing.clear()

    def drop(self) -> None:
        """Swallow every byte from now on, as a link that loses data would."""
        self.dropping = True

    def refuse(self) -> None:
        """Close every new connection as soon as it is accepted."""
        self.refusing = True

    def resume(self) -> None:
        self.dropping = False
        self.refusing = False
        self._flowing.set()

    def cut(self) -> int:
        """Reset every open connection; return how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            self._reset(pair)
        self.cuts += len(pairs)
        return len(pairs)

    def cut_after(self, n_bytes: int) -> None:
        """Reset the first connection that sends more than n_bytes more towards the client."""
        self._cut_after = n_bytes

    def cut_after_sent(self, n_bytes: int) -> None:
        """Reset the first connection that sends more than n_bytes more towards the server
        (an upload cut half-way through)."""
        self._cut_after_up = n_bytes

    def set_upstream(self, port: int) -> None:
        """Send new connections to another port (a restarted server); open ones are cut."""
        self.upstream_port = port
        self.cut()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.cut()

    # --- plumbing -----------------------------------------------------------------

    @staticmethod
    def _reset(pair: tuple[socket.socket, socket.socket]) -> None:
        for sock in pair:
            try:
                # Linger 0: close sends RST, as a broken path or a rebooted peer does. The
                # shutdown first wakes the pump blocked in recv(), which would otherwise
                # keep the socket open (and the bytes flowing) past close().
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refusing:
                self._reset((client,))
                continue
            try:
                upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._reset((client,))
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(client, upstream, pair, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair, downstream: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                self._flowing.wait()
                if self._closed:
                    return
                if self.dropping:
                    continue
                limit = self._cut_after if downstream else self._cut_after_up
                if limit is not None:
                    sent += len(data)
                    if sent > limit:
                        if downstream:
                            self._cut_after = None
                        else:
                            self._cut_after_up = None
                        with self._lock:
                            if pair in self._pairs:
                                self._pairs.remove(pair)
                        self.cuts += 1
                        self._reset(pair)
                        return
                sink.sendall(data)
        except OSError:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            self._reset(pair)


# --- hosts ------------------------------------------------------------------------------

def remote_home(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


def host_workdir(server, workdir: str) -> Path:
    """The local path of a test host's workdir (every test host is this machine)."""
    if workdir.startswith("~/"):
        return remote_home(server.user) / workdir[2:]
    return Path(workdir)


def runner_tree(folder: Path) -> list[psutil.Process]:
    """The harness runners serving this workdir (by their runner.json: the workdir's own and
    each workspace folder's), each followed by every process under it."""
    found: list[psutil.Process] = []
    for record in [folder / "runner.json", *sorted(folder.glob("workspaces/*/runner.json"))]:
        try:
            pid = int(json.loads(record.read_text())["pid"])
            runner = psutil.Process(pid)
            if not any("serve" in part for part in runner.cmdline()):
                continue  # the PID was reused: not a runner of ours
            found += [runner, *runner.children(recursive=True)]
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            continue
    return found


def _signal_all(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.Error:
            pass


def host_processes(server, folder: Path, with_sshd: bool = True) -> list[psutil.Process]:
    processes = list(server.session_processes())
    if with_sshd and server.process is not None:
        try:
            processes.insert(0, psutil.Process(server.process.pid))
        except psutil.Error:
            pass
    # Tasks live in their own sessions under the runner; collect them after the sessions.
    return processes + [p for p in runner_tree(folder) if p not in processes]


def crash_host(server, folder: Path) -> None:
    """Kill the host as a power cut would: its sshd, sessions, runner and task processes."""
    processes = host_processes(server, folder)
    _signal_all(processes, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=5)
    if server.process is not None:
        server.process.wait(timeout=5)
        server.process = None


def hang_host(server, folder: Path, with_sshd: bool = False) -> list[psutil.Process]:
    """Freeze the host: its sshd sessions, its runner and its tasks (and the sshd if asked)."""
    processes = host_processes(server, folder, with_sshd=with_sshd)
    _signal_all(processes, signal.SIGSTOP)
    return processes


def wake_host(processes: list[psutil.Process]) -> None:
    _signal_all(processes, signal.SIGCONT)


def stop_host_runner(folder: Path) -> None:
    """SIGTERM then SIGKILL the runner of a test workdir, thaw it first, and remove the folder."""
    processes = runner_tree(folder)
    _signal_all(processes, signal.SIGCONT)
    runners = [p for p in processes if _is_runner(p)]
    if runners:
        _signal_all(runners, signal.SIGTERM)
        _, alive = psutil.wait_procs(runners, timeout=5)
        _signal_all(alive, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _is_runner(process: psutil.Process) -> bool:
    try:
        return "serve" in process.cmdline()
    except psutil.Error:
        return False
