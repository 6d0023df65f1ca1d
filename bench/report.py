"""Turn one run of the suite into results.json, results.md and results.png.

``python -m bench.report [docs/bench/results.json] [--doc docs/benchmarks.md]``
renders the files again from a saved run.

Every figure is the median (min-max) of its repetitions; each grpyc figure
is also given as a ratio to rpyc-threaded and to the floor measured in the
same run. The targets of the performance issue are checked here and listed
as met / not met with their numbers.
"""

import json
import math
import os
import statistics
from pathlib import Path

from bench.brine_micro import LIBS
from bench.scenarios import METRICS, S3_FIELDS, s3_metric
from bench.scenarios import metric as metric_info

GRPYC, PATCHED, RPYC, FLOOR = "grpyc", "grpyc-patched", "rpyc-threaded", "floor"
PURE = "grpyc-pure"  # the same grpyc with GRPYC_PURE_PYTHON=1
BASE, BASE_PATCHED = "grpyc-base", "grpyc-base-patched"  # --baseline: an older checkout
THREADS = "grpyc-threads"  # grpyc's client in plain OS threads (opt-in: --targets)
DOC_BEGIN = "<!-- bench-results:begin -->"
DOC_END = "<!-- bench-results:end -->"
TIMES = "\N{MULTIPLICATION SIGN}"
DASH = "\N{EN DASH}"


# ---------------------------------------------------------------- numbers
def summary(values):
    """``(median, min, max)`` of the finite values, or None."""
    finite = [v for v in values or [] if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return None
    return statistics.median(finite), min(finite), max(finite)


def fmt(value):
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100 or value == int(value):
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_summary(values):
    stats = summary(values)
    if stats is None:
        return "—"
    middle, low, high = stats
    if low == high:
        return fmt(middle)
    return f"{fmt(middle)} ({fmt(low)}{DASH}{fmt(high)})"


def median(run, target, metric_id):
    stats = summary(run["results"].get(target, {}).get(metric_id))
    return None if stats is None else stats[0]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(value):
    return "—" if value is None else f"{value:.2f}{TIMES}"


def metrics_in(run):
    """The metrics of this run in the suite's order, S3 by connection count."""
    seen = {m for per_target in run["results"].values() for m in per_target}
    counts = sorted({int(m.split(".")[1]) for m in seen if m.startswith("S3.")})
    s3 = [
        s3_metric(count, field)
        for count in counts
        for field in S3_FIELDS
        if f"S3.{count}.{field}" in seen
    ]
    early = [m for m in METRICS if m.id in seen and m.id[:2] in ("S1", "S2")]
    late = [m for m in METRICS if m.id in seen and m.id[:2] not in ("S1", "S2")]
    return early + s3 + late


# ---------------------------------------------------------------- tables
def render_table(run):
    targets = run["targets"]
    header = ["Figure", "Unit", *targets]
    extra = []
    if GRPYC in targets and RPYC in targets:
        extra.append(("grpyc / rpyc-threaded", GRPYC, RPYC))
    if THREADS in targets and RPYC in targets:
        extra.append(("threads / rpyc-threaded", THREADS, RPYC))
    if GRPYC in targets and FLOOR in targets:
        extra.append(("grpyc / floor", GRPYC, FLOOR))
    if GRPYC in targets and PATCHED in targets:
        extra.append(("patched / grpyc", PATCHED, GRPYC))
    if GRPYC in targets and PURE in targets:
        extra.append(("compiled / pure", GRPYC, PURE))
    if GRPYC in targets and BASE in targets:
        extra.append(("grpyc / baseline", GRPYC, BASE))
    if PATCHED in targets and BASE_PATCHED in targets:
        extra.append(("patched / baseline patched", PATCHED, BASE_PATCHED))
    header += [name for name, _, _ in extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in metrics_in(run):
        arrow = "↑" if metric.higher_is_better else "↓"
        cells = [metric.label, f"{metric.unit} {arrow}"]
        cells += [fmt_summary(run["results"].get(t, {}).get(metric.id)) for t in targets]
        cells += [
            fmt_ratio(ratio(median(run, a, metric.id), median(run, b, metric.id)))
            for _, a, b in extra
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_brine(run):
    brine = run.get("brine")
    if not brine:
        return ""
    names = list(dict.fromkeys(key.split(".")[1] for key in brine))
    columns = ["Message"]
    for op in ("dump", "load"):
        columns += [f"grpyc {op}/s", f"rpyc {op}/s", "grpyc / rpyc", f"marshal {op}/s"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in names:
        cells = [name]
        for op in ("dump", "load"):
            ours, theirs, floor = (brine.get(f"B.{name}.{lib}.{op}") for lib in LIBS)
            middle = [summary(values) for values in (ours, theirs)]
            cells += [
                fmt_summary(ours),
                fmt_summary(theirs),
                fmt_ratio(ratio(*(m and m[0] for m in middle))),
                fmt_summary(floor),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- targets
def check_targets(run):
    """``[(target, figures, met)]``; met is True, False, or None (not measured)."""
    checks = []

    def vs(metric_id, other, threshold, what, lower_is_better=False):
        ours, theirs = median(run, GRPYC, metric_id), median(run, other, metric_id)
        # For times, the ratio is theirs / ours: above 1 means grpyc is faster.
        r = ratio(theirs, ours) if lower_is_better else ratio(ours, theirs)
        met = None if r is None else r >= threshold
        checks.append((what, f"{fmt(ours)} vs {fmt(theirs)} {other}: {fmt_ratio(r)}", met))

    def bound(metric_id, limit, what, at_most=True, target=GRPYC):
        value = median(run, target, metric_id)
        met = None if value is None else (value <= limit if at_most else value >= limit)
        checks.append((what, f"{fmt(value)} {metric_info(metric_id).unit}", met))

    # The targets of issue 14 (speed), ratios of medians in one run.
    vs("S1.bound_echo", FLOOR, 1.0, "S1 bound `echo(42)` ≥ 1.0x floor")
    vs("S1.bound_echo", RPYC, 1.3, "S1 bound `echo(42)` ≥ 1.3x rpyc-threaded")
    vs("S1.root_echo", RPYC, 1.5, "S1 `conn.root.echo(42)` ≥ 1.5x rpyc-threaded")
    vs("S2.calls", FLOOR, 0.5, "S2 calls/s ≥ 0.5x floor")
    vs("S2.p99", FLOOR, 0.5, "S2 p99 ≤ 2x the floor's", lower_is_better=True)
    bound("S2.errors", 0, "S2 zero errors")
    counts = sorted(run["meta"].get("s3_counts") or [])
    if 2000 in counts:
        vs("S3.2000.calls", FLOOR, 0.6, "S3 calls/s at 2,000 connections ≥ 0.6x floor")
        bound("S3.2000.rss", 14, "S3 ≤ 14 KiB server RSS per idle connection (at 2,000)")
    else:
        checks.append(("S3 at 2,000 connections", "not run (see --s3)", None))
    if 10000 in counts:
        bound("S3.10000.held", 10000, "S3 10,000 connections held", at_most=False)
    vs("S4.1MiB.rate", FLOOR, 0.9, "S4 1 MiB echo MiB/s ≥ 0.9x floor")
    vs("S4.16MiB.rate", FLOOR, 0.9, "S4 16 MiB echo MiB/s ≥ 0.9x floor")
    vs("S5.attr", RPYC, 1.2, "S5 attribute reads ≥ 1.2x rpyc-threaded")
    vs("S5.iter", RPYC, 1.2, "S5 list iteration ≥ 1.2x rpyc-threaded")
    vs("S6.cb1", RPYC, 1.2, "S6 depth-1 callback ≥ 1.2x rpyc-threaded")
    vs(
        "S6.depth50",
        RPYC,
        1.0,
        "S6 depth-50 chain no slower than rpyc-threaded",
        lower_is_better=True,
    )
    vs("S6.cb16", FLOOR, 0.6, "S6 16 concurrent callback callers ≥ 0.6x floor")
    bound("S6.max_depth", 1000, "S6 recursion depth ≥ 1,000 works", at_most=False)
    checks.append(_patched_check(run))
    return checks


def _patched_check(run):
    what = "patch_all: no figure worse than 0.9x unpatched grpyc"
    if PATCHED not in run["targets"] or GRPYC not in run["targets"]:
        return (what, "not run", None)
    worse, compared = [], 0
    for metric in metrics_in(run):
        ours, patched = median(run, GRPYC, metric.id), median(run, PATCHED, metric.id)
        if ours is None or patched is None or metric.unit == "count":
            continue
        compared += 1
        relative = ratio(patched, ours) if metric.higher_is_better else ratio(ours, patched)
        if relative is not None and relative < 0.9:
            worse.append((relative, metric.label))
    if not compared:
        return (what, "no figure measured on both", None)
    if not worse:
        return (what, f"all {compared} figures ≥ 0.9x", True)
    worse.sort()
    listed = "; ".join(f"{label} {fmt_ratio(rel)}" for rel, label in worse)
    return (what, f"{len(worse)} of {compared} below: {listed}", False)


def render_targets(run):
    lines = ["| Target | Measured (grpyc medians) | Verdict |", "|---|---|---|"]
    for what, figures, met in check_targets(run):
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[met]
        lines.append(f"| {what} | {figures} | {verdict} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- chart
def chart(run, path):
    """Throughput of each target relative to the floor, one group per figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [t for t in run["targets"] if t != FLOOR]
    rows = []
    for metric in metrics_in(run):
        floor = median(run, FLOOR, metric.id)
        if not metric.higher_is_better or metric.unit in ("count", "depth") or not floor:
            continue
        rows.append((metric.label, [ratio(median(run, t, metric.id), floor) for t in shown]))
    if not rows:
        return None
    height = 0.8 / max(len(shown), 1)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(rows) * max(len(shown), 2) / 2 + 1.5))
    for index, target in enumerate(shown):
        ys = [row - 0.4 + height * (index + 0.5) for row in range(len(rows))]
        # A log axis needs positive bars; a missing figure shows as no bar.
        values = [r[1][index] or 1e-3 for r in rows]
        ax.barh(ys, values, height=height, label=target)
    ax.set_xscale("log")  # ratios span 0.01x to 100x: a linear axis hides most bars
    ax.set_xlim(left=0.01)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--", label="floor = 1")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label.replace("`", "") for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "throughput relative to the floor measured in the same run, log scale (higher is better)"
    )
    ax.set_title(f"grpyc vs stock rpyc vs raw-socket floor — {run['meta']['date']}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- files
def render_markdown(run, chart_name):
    meta = run["meta"]
    parts = [
        f"Run of {meta['date']}: `{meta['command']}` — wall time {meta['wall_seconds']} s.",
        "",
        f"Machine: {meta['nproc']} CPUs ({meta['cpu_model']}), Linux {meta['kernel']}, "
        f"Python {meta['python']}, gevent {meta['gevent']}, greenlet {meta['greenlet']}, "
        f"rpyc {meta['rpyc']}. {meta['pinning']}. "
        + _load_note(meta.get("loadavg"))
        + f"{meta['reps']} repetitions of {meta['duration']} s per timed figure; S3 "
        f"{', '.join(f'{n:,}' for n in meta['s3_counts'])} connections, "
        f"{meta['s3_reps']} fresh-process repetition(s) per count up to 2,000, 1 above"
        + ("" if meta.get("s3_large_on_all") else ", above 2,000 only on grpyc and the floor")
        + f"; S4 {meta.get('s4_reps', meta['s3_reps'])} fresh-process repetition(s) per size.",
        "",
        f"Each cell: median (min{DASH}max) over the repetitions. "
        "↑ higher is better, ↓ lower is better.",
        "",
        render_table(run),
        "",
        "### Targets",
        "",
        render_targets(run),
    ]
    if chart_name:
        parts += ["", f"![grpyc vs rpyc vs floor]({chart_name})"]
    brine = render_brine(run)
    if brine:
        title = "### Brine micro-benchmark (operations/s in one process; marshal is the floor)"
        parts += ["", title, "", brine]
    if run["errors"] or run["notes"]:
        parts += ["", "### Errors and notes", ""]
        parts += [f"- error: {e}" for e in run["errors"]]
        parts += [f"- {n}" for n in run["notes"]]
    return "\n".join(parts) + "\n"


def _load_note(loadavg):
    if not loadavg:
        return ""
    return (
        f"1-minute load average {loadavg[0]:.2f} at the start, {loadavg[1]:.2f} at the end "
        "(the suite alone keeps it near 1; more means other work shared the CPUs). "
    )


def write(run, out_dir, doc=None):
    """Write results.json, results.png (if matplotlib is there) and results.md; patch ``doc``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "results.json"]
    paths[0].write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")
    chart_path = None
    try:
        chart_path = chart(run, out_dir / "results.png")
    except ImportError:
        run["notes"].append("no chart: matplotlib is not installed (pip install '.[bench]')")
    if chart_path:
        paths.append(chart_path)
    md_path = out_dir / "results.md"
    markdown = render_markdown(run, chart_path and chart_path.name)
    md_path.write_text("## Benchmark results\n\n" + markdown)
    paths.append(md_path)
    if doc:
        doc_path = Path(doc)
        relative = chart_path and os.path.relpath(chart_path, doc_path.parent)
        _patch_doc(doc_path, render_markdown(run, relative))
        paths.append(doc_path)
    return paths


def _patch_doc(path, block):
    text = path.read_text()
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no {DOC_BEGIN} ... {DOC_END} block to rewrite")
    path.write_text(text[: begin + len(DOC_BEGIN)] + "\n" + block + text[end:])


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("json", nargs="?", default="docs/bench/results.json")
    parser.add_argument("--doc", default=None, help="markdown file whose results block to rewrite")
    args = parser.parse_args(argv)
    path = Path(args.json)
    run = json.loads(path.read_text())
    for written in write(run, path.parent, doc=args.doc):
        print(written)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
