"""RPyC's Windows pipe streams, `Win32PipeStream` and `NamedPipeStream`, as names only.

RPyC 6 defines both on every platform and they work only on Windows,
through pywin32. grpyc runs on POSIX systems (its pipes and sockets wait in
gevent's hub on file descriptors) and has no Windows pipe transport, so
these classes keep the names importable for RPyC programs and fail when
used: opening a stream raises `ImportError`, as RPyC does where pywin32 is
missing, and the two `NamedPipeStream` methods RPyC never implemented raise
`NotImplementedError`, as there. `grpyc.stream` re-exports both.
"""

from __future__ import annotations

from typing import Any, ClassVar, NoReturn

__all__ = ["NamedPipeStream", "Win32PipeStream"]


def _fail(cls: type[Win32PipeStream], method: str) -> NoReturn:
    """Fail as RPyC's `method` of `cls` fails without pywin32."""
    if method in cls._NOT_IN_RPYC:
        raise NotImplementedError(f"{cls.__name__}.{method} is not implemented (as in RPyC)")
    raise ImportError(
        f"{cls.__name__} needs Windows pipes (pywin32's win32pipe and win32file); grpyc has "
        f"no Windows pipe transport: use PipeStream or SocketStream.unix_connect",
        name="win32pipe",
    )


class Win32PipeStream:
    """RPyC's stream over two Windows anonymous pipes: the name, never a stream.

    RPyC-compatible in name and in failure where pywin32 is missing: the
    constructor, `from_std` and `create_pair` raise `ImportError`.
    """

    PIPE_BUFFER_SIZE = 130000
    # RPyC's values, kept for programs that read them; no bytes move here.
    MAX_IO_CHUNK = 64000
    # The methods RPyC's class never implemented: they raise NotImplementedError.
    _NOT_IN_RPYC: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, incoming: Any, outgoing: Any) -> None:
        _fail(type(self), "__init__")

    @classmethod
    def from_std(cls) -> NoReturn:
        """Would wrap standard input and output; raises `ImportError` here."""
        _fail(cls, "from_std")

    @classmethod
    def create_pair(cls) -> NoReturn:
        """Would make two connected streams; raises `ImportError` here."""
        _fail(cls, "create_pair")


class NamedPipeStream(Win32PipeStream):
    """RPyC's stream over a Windows named pipe: the name and constants, never a stream.

    RPyC-compatible in name and in failure where pywin32 is missing:
    `create_server`, `create_client` and the constructor raise `ImportError`;
    `from_std` and `create_pair` raise `NotImplementedError`, as in RPyC.
    """

    NAMED_PIPE_PREFIX = r"\\.\pipe\rpyc_"
    PIPE_IO_TIMEOUT = 3
    CONNECT_TIMEOUT = 3
    _NOT_IN_RPYC = frozenset({"from_std", "create_pair"})

    def __init__(self, handle: Any, is_server_side: bool) -> None:
        _fail(type(self), "__init__")

    @classmethod
    def create_server(cls, pipename: str, connect: bool = True) -> NoReturn:
        """Would serve the named pipe ``pipename``; raises `ImportError` here."""
        _fail(cls, "create_server")

    @classmethod
    def create_client(cls, pipename: str) -> NoReturn:
        """Would connect to the named pipe ``pipename``; raises `ImportError` here."""
        _fail(cls, "create_client")
