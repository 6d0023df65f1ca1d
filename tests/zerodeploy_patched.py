"""Run by tests/test_zerodeploy.py in its own process: deploy under monkey.patch_all().

argv[1] is the JSON of the test sshd's port, keys and user; prints, per
machine kind, [own process, ssh_connect reaches it, dir left after close].
"""

import json
import os
import sys
from pathlib import Path


def main(details):
    # Imported after patch_all(), as a patched program would.
    import gevent

    from grpyc import factory
    from grpyc.zerodeploy import DeployedServer
    from tests.sshd import Sshd

    sshd = Sshd(proc=None, log=None, **details)
    results = []
    for machine in (sshd.ssh_machine(), sshd.paramiko_machine()):
        with DeployedServer(machine, python_executable=sys.executable) as server:
            conn = server.classic_connect()
            sleeps = [gevent.spawn(conn.modules.time.sleep, 0.2) for _ in range(5)]
            gevent.joinall(sleeps, timeout=10, raise_error=True)
            tunneled = factory.ssh_connect(machine, server.remote_port)
            results.append(
                [
                    conn.modules.os.getpid() == server.remote_pid != os.getpid(),
                    tunneled.root.getmodule("os").getpid() == server.remote_pid,
                ]
            )
            tunneled.close()
            conn.close()
            remote_dir = str(server.remote_dir)
        results[-1].append(Path(remote_dir).exists())
    return results


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    print(json.dumps(main(json.loads(sys.argv[1]))))
