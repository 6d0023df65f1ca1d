"""The grpyc version (RPyC-compatible names: ``version``, ``__version__``).

Also the one source of the version grpyc reports as an RPyC peer: the RPyC
release whose wire format and API it implements, tagged with grpyc's own
version (``6.0.2+grpyc.0.1.0``). Its first component is RPyC's major
version, which stock RPyC compares against its own when it reads a remote
exception.
"""

__version__ = "0.1.0"
version = tuple(__version__.split("."))
release_date = "2026-11-25"

# The RPyC release grpyc is wire- and API-compatible with.
RPYC_VERSION = "6.0.2"
# What a grpyc peer reports as its version, and what ``rpyc.__version__``
# says under the drop-in.
LOCAL_VERSION = f"{RPYC_VERSION}+grpyc.{__version__}"
