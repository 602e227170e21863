"""`python -m datarun_remote COMMAND WORKDIR ...`: the harness commands over a shell.

Each command prints one JSON object on stdout and exits 0; on an error it prints
{"error": "..."} and exits 3, so the organiser can always parse what came back.
"""

import argparse
import json
import os
import sys

from .common import HarnessError, disk_full_text, is_disk_full

EXIT_ERROR = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage text and exit 2
        raise HarnessError(f"bad arguments: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="datarun_remote", description="The datarun harness (docs/PROTOCOL.md).")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("workdir")
        sub.add_argument("--space", default=None,
                         help="the workspace id: its tasks live in WORKDIR/workspaces/ID/")
        return sub

    command("info", "what this host offers")
    command("accept", "unpack a bundle archive").add_argument("archive")
    for name in ("start", "serve"):
        sub = command(name, "start the runner detached" if name == "start" else "run the runner")
        sub.add_argument("--slots", type=int, required=True)
        sub.add_argument("--threads", type=int, required=True)
        sub.add_argument("--idle", type=float, default=60.0)
        sub.add_argument("--parent", type=int, default=None,
                         help="stop when this process (the runner's parent) is gone")
    command("poll", "task states").add_argument("keys", nargs="*")
    sub = command("pack", "tar finished results")
    sub.add_argument("out")
    sub.add_argument("keys", nargs="*")
    command("cleanup", "remove task folders").add_argument("keys", nargs="*")
    command("cancel", "kill tasks").add_argument("keys", nargs="*")
    command("log", "a task's output").add_argument("key")
    command("usage", "disk held in WORKDIR: the shared caches, this workspace, the others")
    sub = command("clean", "remove this workspace's task folders, but those kept")
    sub.add_argument("--keep", nargs="*", default=[])
    sub.add_argument("--force", action="store_true", help="cancel running ones, then remove them")
    sub = command("sync", "cleanup, accept, start, poll and pack in one call")
    sub.add_argument("--accept", dest="archive")
    sub.add_argument("--cleanup", nargs="*", default=[])
    sub.add_argument("--poll", nargs="*", default=[])
    sub.add_argument("--pack", dest="pack_out")
    sub.add_argument("--slots", type=int)
    sub.add_argument("--threads", type=int, default=1)
    sub.add_argument("--idle", type=float, default=60.0)
    sub.add_argument("--wait", type=float, default=0.0)
    command("session", "serve sync requests, one JSON object a line on stdin")
    sub = command("acceptdata", "check an uploaded data set (its archive, unpacked; or its files)")
    sub.add_argument("digest")
    sub.add_argument("sha256", nargs="?", help="the archive's SHA-256 (none: the data set came as its files)")
    command("envsetup", "make a virtual environment with these requirements").add_argument(
        "requirements", nargs="*")
    sub = command("floor", "run an empty task: the least memory a task measures here")
    sub.add_argument("--isolation", default="sandbox", choices=["sandbox", "none", "user"])
    sub.add_argument("--threads", type=int, default=1)
    command("sensitive", "bagged scores and blends of a sensitive problem, computed here").add_argument("request")
    return parser


def run(argv: list[str]) -> dict:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from .startup import serve

        return serve(args.workdir, args.slots, args.threads, args.idle, space=args.space,
                     parent=args.parent)
    from . import ops

    if args.command == "sync":
        from .sync import sync

        return sync(args.workdir, archive=args.archive, cleanup=args.cleanup, poll=args.poll,
                    pack_out=args.pack_out, slots=args.slots, threads=args.threads, idle=args.idle,
                    wait=args.wait, space=args.space)
    if args.command == "session":
        from .sync import session

        return session(args.workdir, space=args.space)
    space = args.space
    if args.command == "acceptdata":
        from .incoming import accept_data

        return accept_data(args.workdir, args.digest, args.sha256, space=space)
    if args.command == "envsetup":
        from .envs import setup

        return setup(args.workdir, args.requirements, space=space)
    if args.command == "floor":
        from .floor import measure

        return measure(args.workdir, space=space, isolation=args.isolation, threads=args.threads)
    if args.command == "info":
        return ops.info(args.workdir, space=space)
    if args.command == "accept":
        return ops.accept(args.workdir, args.archive, space=space)
    if args.command == "start":
        return ops.start_runner(args.workdir, args.slots, args.threads, args.idle, space=space,
                                parent=args.parent)
    if args.command == "poll":
        return ops.poll(args.workdir, args.keys, space=space)
    if args.command == "pack":
        return ops.pack(args.workdir, args.out, args.keys, space=space)
    if args.command == "cleanup":
        return ops.cleanup(args.workdir, args.keys, space=space)
    if args.command == "cancel":
        return ops.cancel(args.workdir, args.keys, space=space)
    if args.command == "sensitive":
        from .sensitive import request

        return request(args.workdir, space, args.request)
    if args.command == "usage":
        return ops.usage(args.workdir, space=space)
    if args.command == "clean":
        return ops.clean(args.workdir, args.keep, force=args.force, space=space)
    return ops.log(args.workdir, args.key, space=space)


def argv_workdir(argv: list[str] | None) -> str:
    """The WORKDIR argument (the one after the command), for a message."""
    args = sys.argv[1:] if argv is None else argv
    return args[1] if len(args) > 1 else "."


def main(argv: list[str] | None = None) -> int:
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except HarnessError as error:
        print(json.dumps({"error": str(error)}))
        return EXIT_ERROR
    except OSError as error:
        if is_disk_full(error):
            folder = os.path.dirname(error.filename) if isinstance(error.filename, str) else argv_workdir(argv)
            print(json.dumps({"error": disk_full_text(folder)}))
            return EXIT_ERROR
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        return EXIT_ERROR
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
