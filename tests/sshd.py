"""A private OpenSSH server on 127.0.0.1 for the zero-deploy tests.

`start_sshd(directory)` generates a host key and a client key in
``directory`` (ssh-keygen), writes an sshd config that accepts only that
client key, starts ``sshd -D -e -f <config>`` on a free loopback port and
waits for its "Server listening" line. The returned `Sshd` knows how to make
plumbum machines for it and ends its sshd by PID. The system's ssh service
is never touched; only ``/run/sshd`` (sshd's compiled-in privilege
separation directory) is created if it is missing, as the openssh-server
package's own service does.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

# sshd re-executes itself and so needs an absolute path.
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
# Starting sshd and generating two ed25519 keys takes well under a second.
START_TIMEOUT = 10.0


@dataclass
class Sshd:
    proc: subprocess.Popen
    log: _LogReader
    port: int
    host_public_key: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    known_hosts: Path
    user: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ssh_opts(self) -> list[str]:
        # -F none: nothing from the user's ~/.ssh/config leaks into the test.
        return [
            "-F",
            "none",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "LogLevel=ERROR",
        ]

    def ssh_machine(self):
        from plumbum import SshMachine

        return SshMachine(
            "127.0.0.1",
            user=self.user,
            port=self.port,
            keyfile=str(self.client_key),
            ssh_opts=self.ssh_opts(),
            scp_opts=self.ssh_opts(),
            connect_timeout=START_TIMEOUT,
        )

    def paramiko_machine(self):
        import paramiko
        from plumbum.machines.paramiko_machine import ParamikoMachine

        expected = self.host_public_key.split()[1]

        class ExpectTheTestHostKey(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client, hostname, key):
                if key.get_base64() != expected:
                    raise paramiko.SSHException(f"unexpected host key for {hostname}")

        return ParamikoMachine(
            "127.0.0.1",
            user=self.user,
            port=self.port,
            keyfile=str(self.client_key),
            load_system_host_keys=False,
            missing_host_policy=ExpectTheTestHostKey(),
            look_for_keys=False,
            connect_timeout=START_TIMEOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Session processes of clients still connected keep the pipe open:
        # the reader thread closes it when they are gone.
        self.log.join()


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "grpyc-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_config(directory: Path, port: int) -> Path:
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {directory / 'host_key'}\n"
        f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
        f"PidFile {directory / 'sshd.pid'}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        # The temp dir is not owned the way StrictModes wants; PAM is not configured for it.
        "StrictModes no\n"
        "UsePAM no\n"
        "AllowTcpForwarding yes\n"
        "AllowStreamLocalForwarding yes\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel INFO\n"
    )
    return config


class _LogReader:
    """Drains sshd's stderr in a thread (a full pipe would stall sshd) and spots readiness."""

    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.lines: list[str] = []
        self.listening = False
        self._ready_line = f"Server listening on 127.0.0.1 port {port}"
        self._settled = threading.Event()  # listening, or sshd's stderr ended
        self._thread = threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _drain(self, pipe) -> None:
        with pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if self._ready_line in line:
                    self.listening = True
                    self._settled.set()
        self._settled.set()

    def wait_listening(self) -> bool:
        """True once sshd listens, False if it exited first."""
        if not self._settled.wait(START_TIMEOUT):
            raise TimeoutError(f"sshd did not start in {START_TIMEOUT} s: {self.lines}")
        return self.listening

    def join(self) -> None:
        self._thread.join(timeout=1)


def start_sshd(directory: Path) -> Sshd:
    """Keys, config and a running sshd on a free loopback port; retried if the port was taken."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    host_public_key = _keygen(directory / "host_key")
    client_public_key = _keygen(directory / "client_key")
    (directory / "authorized_keys").write_text(client_public_key + "\n")
    for _ in range(5):
        port = _free_port()
        config = _write_config(directory, port)
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        log = _LogReader(proc, port)
        if log.wait_listening():
            break
        proc.wait()
        log.join()
    else:
        raise RuntimeError("sshd could not bind a free port in 5 attempts")
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
    return Sshd(
        proc=proc,
        log=log,
        port=port,
        host_public_key=host_public_key,
        client_key=directory / "client_key",
        known_hosts=known_hosts,
        user=getpass.getuser(),
    )
