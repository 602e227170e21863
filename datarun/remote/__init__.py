"""The harness: runs datarun tasks on a host, under limits, measuring each task's process tree.

It is shipped to hosts as plain files (as the top-level package `datarun_remote`) and run
with the host's own Python, so it imports nothing from the rest of datarun and uses only
relative imports inside itself. docs/PROTOCOL.md is its contract with the organiser.
"""

HARNESS_VERSION = "0.1.0"
