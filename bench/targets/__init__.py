"""The five targets of a run: how each one serves and how its client connects.

Each target module offers ``serve(on_port)`` (run in the server child:
bind 127.0.0.1 port 0, call ``on_port(port)``, serve until killed) and
``make_client()`` (run in the client child: an object with the operations
of `bench.scenarios.Client`). A target that runs under
``gevent.monkey.patch_all()`` is patched by the child's entry point before
anything else is imported.
"""

from dataclasses import dataclass
from importlib import import_module

# The client method that makes one call of each kind (`bench.cpu --op`, `bench.gccount --op`).
OPERATIONS = {
    "bound": "bound_echo", "root": "root_echo", "callback": "callback", "attr": "attr_read",
    "medium": "medium_echo", "ping": "ping", "error": "remote_error",
    "text3k": "text3k_echo", "text30k": "text30k_echo", "random8k": "random8k_echo",
    "blocking": "blocking_echo",
}  # fmt: skip


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    label: str
    patched: bool  # patch_all() in both the server and the client child
    threads: bool  # the client runs its callers as OS threads
    options: tuple = ()
    env: tuple = ()  # (name, value) pairs set in both children

    def load(self):
        return import_module(f"bench.targets.{self.module}")


TARGETS = {
    "grpyc": Target("grpyc", "grpyc_target", "grpyc", patched=False, threads=False),
    # The same grpyc with its compiled modules switched off (grpyc/_accel.py).
    "grpyc-pure": Target(
        "grpyc-pure",
        "grpyc_target",
        "grpyc pure Python",
        patched=False,
        threads=False,
        env=(("GRPYC_PURE_PYTHON", "1"),),
    ),
    "grpyc-patched": Target(
        "grpyc-patched", "grpyc_target", "grpyc + patch_all", patched=True, threads=False
    ),
    "rpyc-threaded": Target(
        "rpyc-threaded",
        "rpyc_target",
        "rpyc ThreadedServer",
        patched=False,
        threads=True,
        options=("threaded",),
    ),
    "rpyc-gevent": Target(
        "rpyc-gevent",
        "rpyc_target",
        "rpyc GeventServer + patch_all",
        patched=True,
        threads=False,
        options=("gevent",),
    ),
    "floor": Target("floor", "floor_target", "floor (raw gevent)", patched=False, threads=False),
}

# grpyc from another checkout (``--baseline DIR``), for before/after ratios in one run.
BASELINE_TARGETS = {
    "grpyc-base": Target(
        "grpyc-base", "grpyc_target", "grpyc baseline", patched=False, threads=False
    ),
    "grpyc-base-patched": Target(
        "grpyc-base-patched", "grpyc_target", "grpyc baseline + patch_all", patched=True,
        threads=False,
    ),
}  # fmt: skip
TARGETS.update(BASELINE_TARGETS)

# Run only when named in ``--targets``: grpyc's client without gevent, its
# callers plain OS threads (a program written for stock rpyc's threads), against
# a grpyc server. Compare it with rpyc-threaded, whose client runs so too.
OPT_IN_TARGETS = {
    "grpyc-threads": Target(
        "grpyc-threads", "grpyc_target", "grpyc, callers in OS threads", patched=False,
        threads=True,
    ),
}  # fmt: skip
TARGETS.update(OPT_IN_TARGETS)
