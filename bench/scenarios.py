"""The scenarios S1-S6, written once against a target's client operations.

A client (see bench/targets/) offers: ``connect(host, port)``,
``close(conn)``, ``root_echo(conn)`` and ``bound_echo(conn)`` (zero-argument
callables doing one small echo), ``echo_bytes(conn)`` (a callable echoing a
payload), ``iterate_list(conn, count, deadline)``, ``read_attrs(conn, count,
deadline)``, ``callback(conn)`` (a zero-argument callable doing one call
with one callback) and ``chain(conn, depth)`` (a nested callback chain).

Each scenario returns ``{metric_id: [one value per repetition]}``; `METRICS`
says what each id means. Every loop is bounded by a count and a time cap.
"""

import gc
import random
import threading
import time
from dataclasses import dataclass, field

from bench.proc import reset_peak_rss, status_kib

MIB = 1024 * 1024


@dataclass(frozen=True)
class Metric:
    id: str
    label: str
    unit: str
    higher_is_better: bool = True


METRICS = [
    Metric("S1.root_echo", "S1 `conn.root.echo(42)`, sequential", "calls/s"),
    Metric("S1.bound_echo", "S1 bound `echo(42)`, sequential", "calls/s"),
    Metric("S2.calls", "S2 64 callers on one connection", "calls/s"),
    Metric("S2.p50", "S2 latency p50", "ms", higher_is_better=False),
    Metric("S2.p99", "S2 latency p99", "ms", higher_is_better=False),
    Metric("S2.errors", "S2 errors", "count", higher_is_better=False),
]
# S3 figures exist for every connection count run; see `metric`.
S3_FIELDS = {
    "ready": ("time to connect all and answer each first call", "s", False),
    # Runs before 2026-12-06 timed the connect loop alone: which share of the
    # first calls fell inside it was the scheduler's choice (see `s3_many_connections`).
    "connect": ("time to connect all (runs before 2026-12-06)", "s", False),
    "held": ("connections held", "count", True),
    "calls": ("calls, all at once", "calls/s", True),
    "rss": ("server RSS per conn", "KiB", False),
    "errors": ("errors", "count", False),
}
for _size in (1, 16):
    METRICS += [
        Metric(f"S4.{_size}MiB.rate", f"S4 echo {_size} MiB bytes", "MiB/s"),
        Metric(f"S4.{_size}MiB.peak", f"S4 {_size} MiB: peak client RSS", "x payload", False),
    ]
METRICS += [
    Metric("S5.iter", "S5 iterate a 10,000-item remote list", "items/s"),
    Metric("S5.attr", "S5 5,000 remote attribute reads", "reads/s"),
    Metric("S6.cb1", "S6 calls with one callback (depth 1)", "calls/s"),
    Metric("S6.depth50", "S6 depth-50 callback chain", "ms", higher_is_better=False),
    Metric("S6.max_depth", "S6 deepest chain that works", "depth"),
    Metric("S6.cb16", "S6 16 concurrent callback callers", "calls/s"),
    Metric("S6.cb16_errors", "S6 16 callers: errors", "count", higher_is_better=False),
]
METRIC_BY_ID = {metric.id: metric for metric in METRICS}


def s3_metric(count, field_name):
    label, unit, higher = S3_FIELDS[field_name]
    return Metric(f"S3.{count}.{field_name}", f"S3 {count:,} conns: {label}", unit, higher)


def metric(metric_id):
    """The `Metric` of an id, S3 ids of any connection count included."""
    if metric_id.startswith("S3."):
        _, count, field_name = metric_id.split(".")
        return s3_metric(int(count), field_name)
    return METRIC_BY_ID[metric_id]


@dataclass
class Context:
    """What a scenario needs in the client child."""

    client: object
    runtime: object
    host: str
    port: int
    server_pid: int
    reps: int
    duration: float  # seconds per timed repetition
    quick: bool
    notes: list = field(default_factory=list)

    def connect(self):
        return self.client.connect(self.host, self.port)

    def note(self, text):
        if text not in self.notes and len(self.notes) < 20:
            self.notes.append(text)


# ---------------------------------------------------------------- helpers
def call_rate(call, duration):
    """Calls per second of ``call()`` in a loop for ``duration`` seconds."""
    count = 0
    start = time.perf_counter()
    end = start + duration
    while True:
        call()
        count += 1
        now = time.perf_counter()
        if now >= end:
            return count / (now - start)


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


class _Flag:
    """A stop flag read by every worker on each iteration."""

    stop = False


def run_callers(ctx, calls, duration, join_cap):
    """Run each callable of ``calls`` in its own worker, all at once, for ``duration``.

    Returns ``(calls_per_s, latencies_s, errors, hung)``.
    """
    runtime = ctx.runtime
    flag = _Flag()
    start_event = runtime.Event()
    results = []
    lock = threading.Lock()

    def worker(call):
        latencies, errors = [], 0
        start_event.wait()
        clock = time.perf_counter
        while not flag.stop:
            began = clock()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                errors += 1
                ctx.note(f"caller error: {type(exc).__name__}: {exc}"[:200])
                if errors > 100:
                    break
            else:
                latencies.append(clock() - began)
        with lock:
            results.append((latencies, errors))

    workers = [runtime.spawn(worker, call) for call in calls]
    runtime.sleep(0)
    began = time.perf_counter()
    start_event.set()
    runtime.sleep(duration)
    flag.stop = True
    hung = runtime.join(workers, join_cap)
    elapsed = time.perf_counter() - began
    if hung:
        runtime.abandon(workers)
        ctx.note(f"{hung} of {len(workers)} callers still running {join_cap:.0f} s after stop")
    latencies = sorted(value for lat, _ in results for value in lat)
    errors = sum(err for _, err in results) + hung
    return len(latencies) / elapsed, latencies, errors, hung


def run_with_timeout(ctx, func, timeout):
    """``(finished, value or exception)`` of ``func()`` run in a worker for at most ``timeout``."""
    box = {}

    def worker():
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - the caller reports it
            box["error"] = exc

    handle = ctx.runtime.spawn(worker)
    if ctx.runtime.join([handle], timeout):
        ctx.runtime.abandon([handle])
        return False, TimeoutError(f"no answer within {timeout:.1f} s")
    if "error" in box:
        return False, box["error"]
    return True, box["value"]


def close_quietly(ctx, conn, timeout=3.0):
    ok, error = run_with_timeout(ctx, lambda: ctx.client.close(conn), timeout)
    if not ok:
        ctx.note(f"close failed: {type(error).__name__}: {error}"[:200])


# ---------------------------------------------------------------- S1
def s1_sequential(ctx):
    conn = ctx.connect()
    out = {}
    variants = (("S1.root_echo", ctx.client.root_echo), ("S1.bound_echo", ctx.client.bound_echo))
    for metric, make in variants:
        call = make(conn)
        call_rate(call, ctx.duration / 4)  # warm-up
        out[metric] = [call_rate(call, ctx.duration) for _ in range(ctx.reps)]
    close_quietly(ctx, conn)
    return out


# ---------------------------------------------------------------- S2
def s2_shared_connection(ctx, callers=64):
    conn = ctx.connect()
    echo = ctx.client.bound_echo(conn)
    out = {"S2.calls": [], "S2.p50": [], "S2.p99": [], "S2.errors": []}
    run_callers(ctx, [echo] * callers, ctx.duration / 4, join_cap=10)  # warm-up
    for _ in range(ctx.reps):
        rate, latencies, errors, hung = run_callers(ctx, [echo] * callers, ctx.duration, 10)
        out["S2.calls"].append(rate)
        out["S2.p50"].append(percentile(latencies, 0.50) * 1000)
        out["S2.p99"].append(percentile(latencies, 0.99) * 1000)
        out["S2.errors"].append(errors)
        if hung:
            break
    close_quietly(ctx, conn)
    return out


# ---------------------------------------------------------------- S3
def s3_many_connections(ctx, count):
    """One repetition (the suite runs each in fresh processes): connect, hold, call.

    Each connection makes its first call (fetching the bound ``echo`` and
    calling it) in its own worker right after it connects, as a pool would:
    servers may close a connection that stays silent (grpyc's
    ``handshake_timeout``). The figure is the time until every connection is
    open and its first call answered: the loop of connects alone is no
    measure, since how many first calls run inside it is up to the scheduler
    (grpyc's connect to an IP address seldom waits, about one in twenty, so
    224 to 1,062 of 2,000 first calls ran inside the loop from one pair of
    processes to the next).
    Then the server's RSS is read with all of them held, and all of them call
    at once.
    """
    prefix = f"S3.{count}"
    cap = 120.0 if count > 2000 else 60.0
    runtime = ctx.runtime
    lock = threading.Lock()
    calls, failed, workers = [], [], []

    def prepare(conn):
        try:
            call = ctx.client.bound_echo(conn)
            call()
        except Exception as exc:  # noqa: BLE001 - this connection is not held
            ctx.note(f"first call failed: {type(exc).__name__}: {exc}"[:200])
            with lock:
                failed.append(conn)
        else:
            with lock:
                calls.append(call)

    rss_before = status_kib("VmRSS", ctx.server_pid)
    connected, errors = 0, 0
    began = time.perf_counter()
    while connected < count and time.perf_counter() - began < cap:
        try:
            conn = ctx.connect()
        except Exception as exc:  # noqa: BLE001 - counted; too many ends the phase
            errors += 1
            ctx.note(f"connect error: {type(exc).__name__}: {exc}"[:200])
            if errors > 20:
                break
            continue
        connected += 1
        workers.append(runtime.spawn(prepare, conn))
    if connected < count:
        ctx.note(f"{connected} of {count} connections opened within {cap:.0f} s")
    pending = runtime.join(workers, cap)
    ready_s = time.perf_counter() - began
    if pending:
        ctx.note(f"{pending} of {connected} first calls unanswered after {cap:.0f} s")
    held = len(calls)
    rss_held = status_kib("VmRSS", ctx.server_pid)
    _settle_collector()
    rate, _latencies, call_errors, _hung = run_callers(ctx, list(calls), ctx.duration, cap)
    return {
        f"{prefix}.ready": [ready_s],
        f"{prefix}.held": [held],
        f"{prefix}.calls": [rate],
        f"{prefix}.rss": [(rss_held - rss_before) / max(held, 1)],
        f"{prefix}.errors": [errors + len(failed) + pending + call_errors],
    }


def _settle_collector():
    """Collect, then freeze what the set-up left, before S3's timed calls.

    Which full collection falls into the timed phase depends on the counters
    the set-up leaves, not on the library. With thousands of OS threads on
    the client's CPU, one is a stall of CPython's, not of a library: the
    collecting thread holds the GIL while the others, waking every 5 ms to
    ask for it, take the CPU (a full collection of stock's client took 9.6 s
    to 111 s, with its counters set as grpyc's set-up left them, 44-111 ms
    with the objects frozen: ``python -m bench.gcstall``). Every target gets
    the same, before the same phase.
    """
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------- S4
def s4_bulk(ctx, size_mib):
    """Echo a ``size_mib`` MiB payload; run in a fresh client child per size.

    Each timed repetition gets a connection of its own: on loopback a bulk
    rate is set per TCP connection, not per process (one pair of processes
    gave 1,490-2,270 MiB/s at 1 MiB from one connection to the next on the
    floor, 1,910-2,350 on grpyc, and the same rate throughout a connection),
    so repetitions over one connection would all draw the same mode.

    The peak is VmHWM over the RSS just before the first echo, so memory the
    allocator keeps after a transfer counts: it is what the process holds.
    """
    size = size_mib * MIB
    payload = random.Random(size).randbytes(size)
    # A 16 MiB echo takes seconds on stock rpyc: three repetitions there.
    reps = ctx.reps if size_mib < 16 else min(ctx.reps, 3)
    rates = []
    for rep in range(reps):
        first = rep == 0  # the peak is the first connection's: one connection holds it
        conn = ctx.connect()
        echo = ctx.client.echo_bytes(conn)
        if first:
            gc.collect()
            base_kib = status_kib("VmRSS")
            reset_peak_rss()
        _echo_checked(echo, payload)  # warm-up: the connection's first echo is not timed
        rates.append(_bulk_rate(echo, payload, ctx.duration))
        if first:
            peak = (status_kib("VmHWM") - base_kib) * 1024 / size
        close_quietly(ctx, conn)
    return {f"S4.{size_mib}MiB.rate": rates, f"S4.{size_mib}MiB.peak": [peak]}


def _echo_checked(echo, payload):
    result = echo(payload)
    received = len(result)
    del result
    if received != len(payload):
        raise AssertionError(f"echo of {len(payload)} bytes returned {received} bytes")


def _bulk_rate(echo, payload, duration):
    """MiB/s of payload echoed, for at least ``duration`` (at least one echo)."""
    count = 0
    began = time.perf_counter()
    while True:
        _echo_checked(echo, payload)
        count += 1
        elapsed = time.perf_counter() - began
        if elapsed >= duration:
            return len(payload) * count / elapsed / MIB


# ---------------------------------------------------------------- S5
def s5_remote_objects(ctx, items=10_000, reads=5_000):
    if ctx.quick:
        items, reads = items // 10, reads // 10
    conn = ctx.connect()
    cap = 3.0 if ctx.quick else 15.0
    out = {"S5.iter": [], "S5.attr": []}
    reps = min(ctx.reps, 3)  # a rep takes seconds here: three keep the suite in budget
    ctx.client.iterate_list(conn, 100, time.perf_counter() + cap)  # warm-up
    ctx.client.read_attrs(conn, 100, time.perf_counter() + cap)
    for _ in range(reps):
        began = time.perf_counter()
        seen = ctx.client.iterate_list(conn, items, began + cap)
        out["S5.iter"].append(seen / (time.perf_counter() - began))
        if seen < items:
            ctx.note(f"list iteration stopped at the {cap:.0f} s cap after {seen} items")
        began = time.perf_counter()
        done = ctx.client.read_attrs(conn, reads, began + cap)
        out["S5.attr"].append(done / (time.perf_counter() - began))
        if done < reads:
            ctx.note(f"attribute reads stopped at the {cap:.0f} s cap after {done} reads")
    close_quietly(ctx, conn)
    return out


# ---------------------------------------------------------------- S6
def s6_callbacks(ctx):
    out = {}
    conn = ctx.connect()
    callback = ctx.client.callback(conn)
    call_rate(callback, ctx.duration / 4)  # warm-up
    out["S6.cb1"] = [call_rate(callback, ctx.duration) for _ in range(ctx.reps)]

    out["S6.depth50"] = []
    for _ in range(ctx.reps + 1):  # the first chain is a warm-up
        began = time.perf_counter()
        ok, value = run_with_timeout(ctx, lambda: ctx.client.chain(conn, 50), 30)
        if not ok or value != 50:
            ctx.note(f"depth-50 chain failed: {_describe(value)}")
            break
        out["S6.depth50"].append((time.perf_counter() - began) * 1000)
    out["S6.depth50"] = out["S6.depth50"][1:]

    callers = [ctx.client.callback(conn) for _ in range(16)]
    out["S6.cb16"], out["S6.cb16_errors"] = [], []
    for _ in range(ctx.reps):
        rate, _lat, errors, hung = run_callers(ctx, callers, ctx.duration, join_cap=10)
        out["S6.cb16"].append(rate)
        out["S6.cb16_errors"].append(errors)
        if hung:
            break
    close_quietly(ctx, conn)
    return out


def s6_deepest(ctx):
    """The depth search, once per run (it may leave deadlocked chains behind)."""
    return {"S6.max_depth": [deepest_chain(ctx)]}


def _describe(value):
    if isinstance(value, BaseException):
        text = str(value).strip().splitlines()
        return f"{type(value).__name__}: {text[-1] if text else ''}"[:200]
    return f"returned {value!r}"[:200]


def deepest_chain(ctx, start=50):
    """The deepest callback chain that works, up to a cap, within a time budget.

    Doubles the depth from ``start`` until a chain fails, then bisects to
    within 10%.
    Each attempt runs on a fresh connection with a timeout, since a failed
    attempt may leave its connection wedged.
    """
    cap_depth = 200 if ctx.quick else 2000
    budget = 4.0 if ctx.quick else 25.0
    deadline = time.perf_counter() + budget
    good, bad = 0, None

    def attempt(depth):
        remaining = deadline - time.perf_counter()
        if remaining <= 0.5:
            return None
        conn = ctx.connect()
        ok, value = run_with_timeout(
            ctx, lambda: ctx.client.chain(conn, depth), min(remaining, 1 + depth * 0.003)
        )
        close_quietly(ctx, conn)
        if not ok or value != depth:
            ctx.note(f"chain of depth {depth} failed: {_describe(value)}")
            return False
        return True

    depth = start
    while True:
        result = attempt(depth)
        if result is None:
            ctx.note(f"depth search stopped by its {budget:.0f} s budget")
            return good
        if not result:
            bad = depth
            break
        good = depth
        if depth >= cap_depth:
            return good
        depth = min(cap_depth, depth * 2)
    while bad - good > max(1, good // 10):
        mid = (good + bad) // 2
        result = attempt(mid)
        if result is None:
            ctx.note(f"depth search stopped by its {budget:.0f} s budget")
            break
        if result:
            good = mid
        else:
            bad = mid
    return good


SCENARIOS = {
    "S1": s1_sequential,
    "S2": s2_shared_connection,
    "S3": s3_many_connections,
    "S4": s4_bulk,
    "S5": s5_remote_objects,
    "S6": s6_callbacks,
    "S6depth": s6_deepest,
}
