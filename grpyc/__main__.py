"""``python -m grpyc``: the grpyc command."""

import sys

from grpyc.cli import main

sys.exit(main())
