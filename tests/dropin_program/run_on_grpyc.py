"""Run one of this program's scripts, unchanged, on grpyc instead of rpyc.

``python run_on_grpyc.py server.py [args]`` -- the only grpyc-specific lines
are the two below the imports.
"""

import runpy
import sys

import grpyc

grpyc.install_as_rpyc()

if __name__ == "__main__":
    script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
