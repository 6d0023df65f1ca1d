"""SSLAuthenticator against gevent.ssl clients over loopback, with a PKI made per test."""

import time

import gevent
import pytest
from gevent import socket, ssl
from gevent.event import AsyncResult

from grpyc.authenticators import AuthenticationError, SSLAuthenticator
from tests.certs import CLIENT_COMMON_NAME, make_pki

WAIT = 5.0  # generous bound for any single step over loopback


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def authenticate_one(listener, authenticator, accepted_timeout=None):
    """Accept one socket in a greenlet and authenticate it; the outcome lands in an AsyncResult.

    On success the server echoes 5 bytes back, so the client sees the TLS
    channel work in both directions.
    """
    outcome = AsyncResult()

    def serve():
        sock, _ = listener.accept()
        sock.settimeout(accepted_timeout)
        try:
            tls_sock, credentials = authenticator(sock)
        except AuthenticationError as exc:
            outcome.set_exception(exc)
            return
        timeout_after = tls_sock.gettimeout()
        tls_sock.settimeout(WAIT)
        tls_sock.sendall(tls_sock.recv(5))
        outcome.set((tls_sock, credentials, timeout_after))

    greenlet = gevent.spawn(serve)
    return outcome, greenlet


def client_context(cafile, certfile=None, keyfile=None):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context


def tls_connect(listener, context, server_hostname="localhost"):
    sock = socket.create_connection(listener.getsockname(), timeout=WAIT)
    return context.wrap_socket(sock, server_hostname=server_hostname)


def exchange(tls_sock, payload=b"hello"):
    tls_sock.sendall(payload)
    return tls_sock.recv(len(payload))


def finish(outcome, greenlet):
    try:
        return outcome.get(timeout=WAIT)
    finally:
        greenlet.join(timeout=WAIT)


def test_cert_reqs_defaults_to_required_with_ca_certs(pki):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    assert auth.cert_reqs == ssl.CERT_REQUIRED
    assert auth.ca_certs == str(pki.ca_cert)


def test_cert_reqs_defaults_to_none_without_ca_certs(pki):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert)
    assert auth.cert_reqs == ssl.CERT_NONE
    assert auth.ca_certs is None
    assert auth.keyfile == str(pki.server_key)
    assert auth.certfile == str(pki.server_cert)


def test_explicit_cert_reqs_is_kept(pki):
    auth = SSLAuthenticator(
        pki.server_key, pki.server_cert, ca_certs=pki.ca_cert, cert_reqs=ssl.CERT_OPTIONAL
    )
    assert auth.cert_reqs == ssl.CERT_OPTIONAL


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_non_positive_handshake_timeout_is_refused(pki, timeout):
    with pytest.raises(
        ValueError, match=rf"handshake_timeout must be positive or None, got {timeout}"
    ):
        SSLAuthenticator(pki.server_key, pki.server_cert, handshake_timeout=timeout)


def test_missing_key_file_fails_at_construction(pki, tmp_path):
    with pytest.raises(FileNotFoundError):
        SSLAuthenticator(tmp_path / "absent.key", pki.server_cert)


def test_client_trusting_the_ca_exchanges_bytes(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    with tls_connect(listener, client_context(pki.ca_cert)) as client:
        assert exchange(client, b"hello") == b"hello"
        tls_sock, credentials, timeout_after = finish(outcome, greenlet)
        assert isinstance(tls_sock, ssl.SSLSocket)
        assert tls_sock.version() == client.version()
        assert credentials is None  # CERT_NONE: no client certificate was asked for
        assert timeout_after is None
        tls_sock.close()


def test_client_can_verify_the_server_by_ip_address(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    with tls_connect(listener, client_context(pki.ca_cert), server_hostname="127.0.0.1") as client:
        assert exchange(client, b"by-ip") == b"by-ip"
        finish(outcome, greenlet)[0].close()


def test_socket_timeout_is_restored_after_the_handshake(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert, handshake_timeout=0.5)
    outcome, greenlet = authenticate_one(listener, auth, accepted_timeout=7.0)
    with tls_connect(listener, client_context(pki.ca_cert)) as client:
        assert exchange(client) == b"hello"
        tls_sock, _, timeout_after = finish(outcome, greenlet)
        assert timeout_after == 7.0
        tls_sock.close()


def test_client_with_the_wrong_ca_is_refused(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        tls_connect(listener, client_context(pki.other_ca_cert))
    with pytest.raises(AuthenticationError, match=r"TLS handshake failed: .*UNKNOWN_CA"):
        finish(outcome, greenlet)


def test_mutual_tls_accepts_the_client_certificate(pki, listener):
    auth = SSLAuthenticator(
        pki.server_key, pki.server_cert, ca_certs=pki.ca_cert, cert_reqs=ssl.CERT_REQUIRED
    )
    outcome, greenlet = authenticate_one(listener, auth)
    context = client_context(pki.ca_cert, pki.client_cert, pki.client_key)
    with tls_connect(listener, context) as client:
        assert exchange(client, b"mtls!") == b"mtls!"
        tls_sock, credentials, _ = finish(outcome, greenlet)
        assert credentials["subject"] == ((("commonName", CLIENT_COMMON_NAME),),)
        assert credentials["issuer"] == ((("commonName", "grpyc test CA"),),)
        tls_sock.close()


def test_mutual_tls_refuses_a_client_without_certificate(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    # TLS 1.3: the client's handshake ends before the server checks its
    # certificate, so the client learns of the refusal on its first read.
    with tls_connect(listener, client_context(pki.ca_cert)) as client:
        with pytest.raises(AuthenticationError, match="PEER_DID_NOT_RETURN_A_CERTIFICATE"):
            finish(outcome, greenlet)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            client.recv(1)


def test_mutual_tls_refuses_a_client_certificate_from_another_ca(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert, ca_certs=pki.ca_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    context = client_context(pki.ca_cert, pki.other_client_cert, pki.other_client_key)
    with tls_connect(listener, context) as client:
        with pytest.raises(AuthenticationError, match="certificate verify failed"):
            finish(outcome, greenlet)
        with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
            client.recv(1)


def test_silent_client_fails_after_the_handshake_timeout(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert, handshake_timeout=0.3)
    outcome, greenlet = authenticate_one(listener, auth)
    with socket.create_connection(listener.getsockname(), timeout=WAIT) as client:
        started = time.perf_counter()
        with pytest.raises(
            AuthenticationError, match=r"not completed within handshake_timeout=0\.3"
        ):
            finish(outcome, greenlet)
        assert 0.25 <= time.perf_counter() - started < WAIT
        # The authenticator closed the accepted socket: the client sees EOF.
        assert client.recv(1) == b""


def test_plaintext_client_is_refused(pki, listener):
    auth = SSLAuthenticator(pki.server_key, pki.server_cert)
    outcome, greenlet = authenticate_one(listener, auth)
    with socket.create_connection(listener.getsockname(), timeout=WAIT) as client:
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(AuthenticationError, match="TLS handshake failed"):
            finish(outcome, greenlet)
