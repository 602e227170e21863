"""Shipping a big data set to four hosts, against four parallel `scp` of the same file.

A data set of SIZE MB (CSV-like text, generated) is shipped by datarun to 4 SSH hosts
(real sshd on loopback, the datarun-test user): each host's transfer on a thread of its
own, as the dispatcher's lanes do, from nothing to the data set unpacked and checked on
every host (the archive is built once, inside the timing: `pack` is its share). The
harness is shipped and each host's runner started before the timing: a runner's imports
(about a second of CPU per host) are not the data set's transfer, and on loopback they
would take the same two cores. The baseline, in the same run: four `scp` of the data
file started together, to fresh folders of the same hosts (a plain copy: nothing unpacked
or checked). The goal: datarun's wall at most 1.2x the baseline's.

Then a resumed transfer: the upload to one fresh host is cut by the tests' fault proxy
about half-way through, and the next attempt's bytes are compared with what was missing
(goal: at most 10 % more).

From PROCESS_FROM bytes (64 MB) a data set goes through OpenSSH's `ssh`, one process per
host, when the organiser has it (`datarun.executors.shipssh`), else over paramiko in a
process per host. `--paths auto,paramiko` (the default beside a full-size run) times both
in the same run: `auto` as datarun chooses, `paramiko` with `ssh` taken away; the table
says which path each side's hosts took.

`--levels auto,0,1` ships the data set with each choice in turn: `auto` as datarun
decides (gzip only when a sample shrinks to GZIP_BELOW of its size: the sample's ratio
is printed), `0` as its files, `N` a tar gzip'd at level N, to see which is fastest end to end here.

Needs root and the test setup (`bash scripts/setup-test-env.sh`).
Run: .venv/bin/python bench/ship.py [--size MB] [--levels auto,0,1] [--quick] [--json]
"""

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from common import (
    RemoteWorkdir,
    Workspace,
    finish,
    load_note,
    print_table,
    ssh_servers,
    ssh_setup_missing,
    temp_folder,
    use_ssh_hosts,
    verdict,
)

HOSTS = 4
GOAL_RATIO = 1.2
GOAL_RESUME = 1.10


def generate(folder: Path, megabytes: int) -> Path:
    """A data set folder with one CSV of about `megabytes` MB; its path."""
    import random

    folder.mkdir(parents=True)
    rng = random.Random(42)
    block = "".join(f"{i},{rng.random():.6f},{rng.randint(0, 10**6)},{rng.gauss(0, 1):.5f},"
                    f"{rng.choice(['setosa', 'versicolor', 'virginica'])}\n" for i in range(100_000)).encode()
    with open(folder / "train.csv", "wb") as handle:
        handle.write(b"id,a,b,c,species\n")
        while handle.tell() < megabytes * 1_000_000:
            handle.write(block)
    (folder / "meta.json").write_text('{"target": "species"}')
    return folder


def executor_for(workspace_root: Path, name: str):
    from datarun.executors.hosts import load_hosts
    from datarun.executors.ssh import SSHExecutor
    from datarun.store.workspace import find_workspace

    workspace = find_workspace(workspace_root)
    return SSHExecutor(workspace, load_hosts(workspace.hosts_file)[name])


def wait_for_runners(remotes: list, timeout: float = 120.0) -> None:
    """Until every host's runner has written its runner.json (its imports done)."""
    deadline = time.monotonic() + timeout
    for remote in remotes:
        while not list(remote.path.glob("workspaces/*/runner.json")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no runner started in {remote.path}")
            time.sleep(0.1)


def ship_to_all(workspace: Workspace, names: list[str], digest: str, folder: Path,
                remotes: list) -> tuple[float, int, float, str]:
    """Wall time to ship the data set to every host side by side; bytes sent; the time
    spent building the archive (within the wall); the path(s) the hosts' uploads took."""
    import datarun.executors.shipping as shipping

    executors = [executor_for(workspace.root, name) for name in names]
    for executor in executors:
        executor.prepare({})  # the harness first: not part of the data set's transfer
        executor._start_runner()  # as the first data set would; its imports are not shipping
    wait_for_runners(remotes)
    errors: list[BaseException] = []
    real_archive = shipping.data_archive
    packing: list[float] = []

    def timed_archive(*args, **kwargs):
        started = time.perf_counter()
        try:
            return real_archive(*args, **kwargs)
        finally:
            packing.append(time.perf_counter() - started)

    shipping.data_archive = timed_archive

    def ship(executor) -> None:
        try:
            executor.prepare({digest: folder})
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    before = sum(e.conn.stats.bytes_sent for e in executors)
    started = time.perf_counter()
    threads = [threading.Thread(target=ship, args=(executor,)) for executor in executors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    shipping.data_archive = real_archive
    sent = sum(e.conn.stats.bytes_sent for e in executors) - before
    paths = ",".join(sorted({str(e.data_shipped_by) for e in executors}))
    for executor in executors:
        executor.close()
    if errors:
        raise errors[0]
    return wall, sent, max(packing, default=0.0), paths  # the other lanes wait for the first to build it


def side_key(level: str, path: str) -> str:
    """The figures' key of a side: datarun_LEVEL for datarun's own choice of path."""
    return f"datarun_{level}" if path == "auto" else f"datarun_{level}_{path}"


def scp_to_all(servers: list, file: Path, tag: str) -> float:
    """Wall time of four scp of `file` started together, one per host."""
    commands = []
    for number, server in enumerate(servers, 1):
        target = f"datarun-bench-scp-{tag}-{number}"
        commands.append(["scp", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                         "-o", f"UserKnownHostsFile={os.devnull}", "-i", str(server.client_key),
                         "-P", str(server.port), str(file), f"{server.user}@127.0.0.1:{target}.csv"])
    started = time.perf_counter()
    processes = [subprocess.Popen(command) for command in commands]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"scp failed: exit codes {codes}")
    for number, server in enumerate(servers, 1):
        RemoteWorkdir(server, f"~/datarun-bench-scp-{tag}-{number}.csv").path.unlink(missing_ok=True)
    return wall


def resumed(tmp: Path, server, digest: str, folder: Path, archive_size: int) -> dict:
    """Cut one upload about half-way through, resume it; what the resumed attempt sent."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from faultproxy import FaultProxy

    workspace = Workspace(tmp / "resume")
    remotes = use_ssh_hosts(workspace, [server], slots=1, tag=uuid.uuid4().hex[:8])
    proxy = FaultProxy(server.port)
    hosts = (workspace.root / "hosts.toml").read_text().replace(f"port = {server.port}", f"port = {proxy.port}")
    (workspace.root / "hosts.toml").write_text(hosts)
    with open(workspace.root / ".datarun" / "known_hosts", "a") as known:
        known.write(f"[127.0.0.1]:{proxy.port} {server.host_key_name} {server.host_key_pub}\n")
    try:
        executor = executor_for(workspace.root, "ssh1")
        executor.prepare({})
        proxy.cut_after_sent(archive_size // 2)
        try:
            executor.prepare({digest: folder})
        except Exception:  # noqa: BLE001 - the cut is the point
            pass
        executor.close()
        again = executor_for(workspace.root, "ssh1")
        before = again.conn.stats.bytes_sent
        again.prepare({digest: folder})
        sent = again.conn.stats.bytes_sent - before
        again.close()
        have = again.data_resumed_from or 0
        missing = archive_size - have
        return {"archive": archive_size, "kept": have, "missing": missing, "sent": sent,
                "ratio": sent / missing if missing else float("inf")}
    finally:
        proxy.close()
        for remote in remotes:
            remote.stop_and_remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000, help="MB of data (default 1000)")
    parser.add_argument("--levels", default="auto",
                        help="auto (datarun's choice), 0 (as its files) or a gzip level, e.g. auto,0,1 (default auto)")
    parser.add_argument("--paths", default=None,
                        help="auto (datarun's choice: ssh when there) and/or paramiko (ssh taken away); "
                             "default auto,paramiko, auto alone with --quick")
    parser.add_argument("--quick", action="store_true", help="20 MB, for the smoke test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    missing = ssh_setup_missing()
    if missing:
        print(f"bench/ship.py {missing}", file=sys.stderr)
        return 2
    size = 20 if args.quick else args.size
    levels = args.levels.split(",")
    paths = (args.paths or ("auto" if args.quick else "auto,paramiko")).split(",")
    import datarun.executors.shipping as shipping
    import datarun.executors.shipssh as shipssh
    from datarun.store.blobs import tree_hash

    def choose(level: str) -> None:
        """Make datarun's packing follow `level` (auto: its own decision)."""
        shipping.COMPRESSLEVEL, shipping.GZIP_BELOW = default_level, default_below
        shipping._decided.clear()
        if level == "0":
            shipping.GZIP_BELOW = -1.0
        elif level != "auto":
            shipping.COMPRESSLEVEL, shipping.GZIP_BELOW = int(level), 2.0

    default_level, default_below = shipping.COMPRESSLEVEL, shipping.GZIP_BELOW

    figures: dict = {"size_mb": size, "hosts": HOSTS, "load_before": load_note()}
    with temp_folder("datarun-bench-ship-") as tmp, ssh_servers(HOSTS + 1) as servers:
        folder = generate(tmp / "data", size)
        raw = sum(p.stat().st_size for p in folder.iterdir())
        digest = tree_hash(folder)
        figures["data_bytes"] = raw
        figures["sample_ratio"] = shipping.sample_ratio(folder)
        figures["auto_compresses"] = shipping.compression_level(folder) > 0
        figures["scp"] = {"wall": scp_to_all(servers[:HOSTS], folder / "train.csv", uuid.uuid4().hex[:8])}
        sides = [(level, path) for level in levels for path in paths]
        for level, path in sides:
            choose(level)
            default_binary = shipssh.SSH_BINARY
            if path == "paramiko":
                shipssh.SSH_BINARY = "datarun-bench-no-ssh"  # not on PATH: the paramiko process
            workspace = Workspace(tmp / f"ws-{level}-{path}")
            remotes = use_ssh_hosts(workspace, servers[:HOSTS], slots=1, tag=uuid.uuid4().hex[:8])
            try:
                wall, sent, pack, took = ship_to_all(workspace, [f"ssh{n}" for n in range(1, HOSTS + 1)],
                                                     digest, folder, remotes)
            finally:
                shipssh.SSH_BINARY = default_binary
                for remote in remotes:
                    remote.stop_and_remove()
            archive = workspace.root / ".datarun" / "ship" / f"{digest}.tar"
            packed = archive.exists()  # else the data set went as its files
            figures[side_key(level, path)] = {"wall": wall, "sent": sent, "pack": pack, "path": took,
                                              "archive": archive.stat().st_size if packed else raw,
                                              "gzip": packed and archive.read_bytes()[:2] == b"\x1f\x8b",
                                              "ratio": wall / figures["scp"]["wall"]}
        # The baseline again after: the machine is shared, so bracket datarun's runs.
        figures["scp_after"] = {"wall": scp_to_all(servers[:HOSTS], folder / "train.csv", uuid.uuid4().hex[:8])}
        choose(levels[0])
        archive_size = figures[side_key(levels[0], paths[0])]["archive"]
        figures["resume"] = resumed(tmp, servers[HOSTS], digest, folder, archive_size)
    figures["load_after"] = load_note()
    scp = min(figures["scp"]["wall"], figures["scp_after"]["wall"])
    best = min(sides, key=lambda side: figures[side_key(*side)]["wall"])
    rows = [["4 x scp (before, after)", f"{figures['scp']['wall']:.1f}s, {figures['scp_after']['wall']:.1f}s",
             "", "", f"{4 * raw / 1e6:.0f} MB", ""]]
    for level, path in sides:
        side = figures[side_key(level, path)]
        side["ratio"] = side["wall"] / scp
        packed = "gzip" if side["gzip"] else "its files"
        label = {"auto": f"datarun as it decides ({packed})", "0": "datarun, as its files"}.get(
            level, f"datarun, gzip level {level}") + (", ssh taken away" if path == "paramiko" else "")
        rows.append([label, side["path"], f"{side['wall']:.1f}s", f"{side['pack']:.1f}s", f"{side['sent'] / 1e6:.0f} MB",
                     f"{side['ratio']:.2f}x {verdict(side['ratio'], GOAL_RATIO)}"])
    resume = figures["resume"]
    figures["best_level"] = best[0]
    figures["best_path"] = best[1]
    figures["goal_ratio"] = GOAL_RATIO
    figures["goal_resume"] = GOAL_RESUME
    lines = [f"{size} MB data set to {HOSTS} loopback hosts ({figures['load_before']}); a sample "
             f"compresses to {figures['sample_ratio']:.2f} (gzip when <= {default_below})"]
    import io

    out = io.StringIO()
    print_table("", ["side", "path", "wall", "of it pack", "sent", f"vs scp (goal <= {GOAL_RATIO}x)"], rows, out=out)
    lines.append(out.getvalue().rstrip())
    lines.append(f"resumed after a cut: {resume['kept'] / 1e6:.1f} MB of {resume['archive'] / 1e6:.1f} MB kept, "
                 f"{resume['sent'] / 1e6:.1f} MB sent for {resume['missing'] / 1e6:.1f} MB missing: "
                 f"{resume['ratio']:.3f}x {verdict(resume['ratio'], GOAL_RESUME)}")
    lines.append(f"fastest end to end: {best[0]} by {best[1]}; load after: {figures['load_after']}")
    finish(figures, lines, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
