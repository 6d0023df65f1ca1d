"""Run one fuzz target under atheris (libFuzzer), coverage-guided over grpyc.

Usage (from the repository root, after ``.venv/bin/pip install atheris``)::

    .venv/bin/python -m fuzz.run TARGET [libFuzzer options]
    .venv/bin/python -m fuzz.run brine -max_total_time=300

TARGET is one of brine, frames, message, dispatch (see fuzz/targets.py).
The corpus lives in ``$GRPYC_FUZZ_DIR/TARGET`` (default /tmp/grpyc-fuzz),
seeded on first use; a crash is written to ``crash-<sha1>`` in the current
directory and replays with ``python -m fuzz.run TARGET crash-<sha1>``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris


def _corpus(target: str, seeds: list[bytes]) -> str:
    directory = Path(os.environ.get("GRPYC_FUZZ_DIR", "/tmp/grpyc-fuzz")) / target  # noqa: S108 - a scratch corpus, overridable
    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.iterdir()):
        for number, seed in enumerate(seeds):
            (directory / f"seed-{number:03d}").write_bytes(seed)
    return str(directory)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        raise SystemExit(__doc__)
    target_name, options = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=["grpyc"]):
        from fuzz.targets import SEEDS, TARGETS
    if target_name not in TARGETS:
        raise SystemExit(f"unknown target {target_name!r}; choose from {sorted(TARGETS)}")
    replaying = any(not option.startswith("-") for option in options)
    corpus = [] if replaying else [_corpus(target_name, SEEDS[target_name])]
    atheris.Setup([sys.argv[0], *options, *corpus], TARGETS[target_name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
