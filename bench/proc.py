"""Process-side helpers shared by the server and client children.

CPU pinning, the descriptor limit, dying with the parent, and memory, CPU
and scheduling figures read from /proc (Linux only, like the whole suite).
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


def _stat_fields(pid):
    # The fields after the command name, which may itself hold spaces.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_times(pid="self"):
    """(user, system) seconds a process has run, from /proc/PID/stat."""
    fields = _stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def minor_faults(pid="self"):
    """Minor page faults of a process so far."""
    return int(_stat_fields(pid)[7])


def context_switches(pid="self"):
    """Context switches of a process so far, voluntary and involuntary."""
    total = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def reset_peak_rss():
    """Reset VmHWM of this process to its current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def start_cprofile(side, threads):
    """Profile this child with cProfile when ``BENCH_CPROFILE`` names a directory.

    Returns a function that writes ``<dir>/<side>.pstats`` (also on SIGTERM,
    which is how the suite stops a server), or None when not profiling.
    ``threads`` says the child runs no gevent hub (stock rpyc's thread mode).
    """
    directory = os.environ.get("BENCH_CPROFILE")
    if not directory:
        return None
    import cProfile

    profiler = cProfile.Profile()

    def dump():
        profiler.disable()
        profiler.dump_stats(os.path.join(directory, f"{side}.pstats"))

    def on_term(*_args):
        dump()
        os._exit(0)

    if threads:
        signal.signal(signal.SIGTERM, on_term)
    else:
        import gevent

        gevent.signal_handler(signal.SIGTERM, on_term)
    profiler.enable()
    return dump
