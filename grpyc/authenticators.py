"""Authenticators: callables that vet an accepted socket before a connection is built.

The RPyC-compatible convention: ``authenticator(sock) -> (sock_like, credentials)``,
or `AuthenticationError` when the peer is refused. The server stores the
credentials in the connection's config under ``"credentials"``.

`SSLAuthenticator` does the TLS handshake with `gevent.ssl`, so it yields to
other greenlets whether or not the process is monkey-patched, and bounds the
handshake with a socket timeout so a silent client cannot hold a slot.
"""

from __future__ import annotations

import socket
from typing import Any

from gevent import ssl

__all__ = ["AuthenticationError", "SSLAuthenticator"]

# A real client finishes a TLS handshake in a few round trips, well under a
# second even on slow links; ten seconds leaves a wide margin for those while
# a client that connects and says nothing releases its slot soon.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class AuthenticationError(Exception):
    """The peer failed authentication; RPyC-compatible."""


class SSLAuthenticator:
    """Wrap accepted sockets in server-side TLS and verify the peer; RPyC-compatible.

    ``authenticator(sock)`` returns ``(tls_socket, peer_certificate)``, where the
    certificate is the dict of `ssl.SSLSocket.getpeercert` (``None`` when the
    client sent no certificate).

    Args:
        keyfile: the server's private key (PEM).
        certfile: the server's certificate chain (PEM).
        ca_certs: CAs that client certificates must chain to (PEM).
        cert_reqs: an `ssl.VerifyMode`; by default ``CERT_REQUIRED`` when
            ``ca_certs`` is given, else ``CERT_NONE``.
        ssl_version: an `ssl` protocol constant; by default
            ``PROTOCOL_TLS_SERVER`` (the best version both sides speak).
        ciphers: an OpenSSL cipher string, or ``None`` for OpenSSL's defaults.
        handshake_timeout: seconds a client has to complete the handshake, or
            ``None`` to wait forever.

    Raises:
        ValueError: ``handshake_timeout`` is not positive.
        OSError: the key, certificate or CA files cannot be read or loaded
            (`ssl.SSLError` is an OSError).

    Where grpyc differs from RPyC: the TLS context is built once, here, so bad
    files fail at construction and not on every connection (a renewed
    certificate needs a new authenticator); when ``ca_certs`` is given it is
    the only trust store, where RPyC also trusts the system CAs for client
    certificates; ``handshake_timeout`` is new.
    """

    def __init__(
        self,
        keyfile: Any,
        certfile: Any,
        ca_certs: Any = None,
        cert_reqs: ssl.VerifyMode | None = None,
        ssl_version: int | None = None,
        ciphers: str | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        if handshake_timeout is not None and not handshake_timeout > 0:
            raise ValueError(
                f"handshake_timeout must be positive or None, got {handshake_timeout!r}"
            )
        self.keyfile = str(keyfile)
        self.certfile = str(certfile)
        self.ca_certs = str(ca_certs) if ca_certs else None
        if cert_reqs is None:
            cert_reqs = ssl.CERT_REQUIRED if self.ca_certs else ssl.CERT_NONE
        self.cert_reqs = cert_reqs
        self.ssl_version = ssl_version
        self.ciphers = ciphers
        self.handshake_timeout = handshake_timeout
        self._context = self._make_context()

    def _make_context(self) -> ssl.SSLContext:
        # gevent.ssl.create_default_context builds a stdlib (blocking) context,
        # so the cooperative class is instantiated directly.
        version = ssl.PROTOCOL_TLS_SERVER if self.ssl_version is None else self.ssl_version
        context = ssl.SSLContext(version)
        context.load_cert_chain(self.certfile, keyfile=self.keyfile)
        if self.ca_certs is not None:
            context.load_verify_locations(self.ca_certs)
        elif self.cert_reqs != ssl.CERT_NONE:
            # Verification without named CAs falls back to the system store, as in RPyC.
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        if self.ciphers is not None:
            context.set_ciphers(self.ciphers)
        context.verify_mode = self.cert_reqs
        return context

    def __call__(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any] | None]:
        """Do the server side of the TLS handshake on ``sock``.

        Returns:
            The TLS socket (it owns the file descriptor now, with ``sock``'s
            original timeout) and the client's certificate dict or ``None``.

        Raises:
            AuthenticationError: the handshake failed, the client's certificate
                was refused, or ``handshake_timeout`` passed. ``sock`` is closed.
        """
        original_timeout = sock.gettimeout()
        # None makes the handshake blocking (cooperatively), whatever sock's mode was.
        sock.settimeout(self.handshake_timeout)
        try:
            tls_sock = self._context.wrap_socket(sock, server_side=True)
        except TimeoutError as exc:
            raise AuthenticationError(
                f"TLS handshake not completed within handshake_timeout={self.handshake_timeout}"
            ) from exc
        except OSError as exc:
            # SSLError (refused certificate, protocol mismatch) and resets alike.
            raise AuthenticationError(f"TLS handshake failed: {exc}") from exc
        tls_sock.settimeout(original_timeout)
        return tls_sock, tls_sock.getpeercert()
