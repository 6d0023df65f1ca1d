"""The README's quick start and the demo command run as documented."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    assert commands[0].endswith("-m grpyc demo")
    assert commands[1].endswith("-m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci


def test_readme_quick_start_runs():
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)\n```", text, re.S).group(1)
    done = _run([sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["5", "40", "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18]"]


def test_demo_command_prints_its_session():
    done = _run([sys.executable, "-m", "grpyc", "demo"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("server: grpyc DemoService listening on 127.0.0.1:")
    assert "root.add(2, 3) -> 5" in lines[1]
    assert "chain 100 deep -> 100" in done.stdout
    assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in done.stdout
    assert "connection closed cleanly: True" in done.stdout
