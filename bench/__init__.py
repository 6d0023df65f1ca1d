"""grpyc's benchmark suite: grpyc against stock RPyC 6.0.2 and a raw-socket floor.

Run from the repository root with ``python -m bench`` (see ``--help`` and
docs/benchmarks.md). The parent process only orchestrates: every server and
every client runs in its own child process, pinned to a CPU, and is stopped
by the parent whatever happens.
"""
