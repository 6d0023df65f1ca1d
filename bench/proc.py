"""Process-side helpers shared by the server and client children.

CPU pinning, the descriptor limit, dying with the parent, and memory
figures read from /proc (Linux only, like the whole suite).
"""

import ctypes
import os
import resource
import signal

_PR_SET_PDEATHSIG = 1


def pin_to_cpu(cpu):
    """Run this process on one CPU only (None leaves the affinity alone)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def raise_nofile_limit():
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def die_with_parent():
    """Ask the kernel to SIGKILL this process if the parent (the suite) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # best effort: the suite still kills its children itself


def status_kib(field, pid="self"):
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def reset_peak_rss():
    """Reset VmHWM of this process to its current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
