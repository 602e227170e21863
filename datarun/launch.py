"""The `datarun` command's entry point: start the RAMP kit head start, then the CLI."""

import sys


def main(prog_name: str | None = None) -> None:
    from datarun.prefetch import start

    start(sys.argv[1:])
    from datarun.cli import main as cli_main

    cli_main(prog_name)
