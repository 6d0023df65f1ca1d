"""``python -m grpyc.cli``: the grpyc command, as ``python -m grpyc``."""

import sys

from grpyc.cli import main

sys.exit(main())
