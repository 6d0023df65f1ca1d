"""``rpyc.version`` under the drop-in: the RPyC version grpyc stands in for.

RPyC programs read ``rpyc.version.version`` and ``rpyc.__version__`` to
learn which RPyC they run on; under `grpyc.install_as_rpyc` the answer is
the RPyC release grpyc implements, tagged with grpyc's own version, the
same string a grpyc peer reports (`grpyc.version.LOCAL_VERSION`).
``import grpyc as rpyc`` gives grpyc's own version module instead.
"""

from grpyc.version import LOCAL_VERSION, RPYC_VERSION, release_date

__all__ = ["__version__", "release_date", "version"]

__version__ = LOCAL_VERSION
# RPyC's tuple of strings, of the release only: ("6", "0", "2").
version = tuple(RPYC_VERSION.split("."))
