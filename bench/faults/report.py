"""The figures of a run, for people: one markdown table (a row per fault and consumer,
then the guard per node) and one SVG timeline per fault (a panel per consumer: live hosts
that exist, live hosts listed, dead hosts listed, live hosts missing; the fault window
shaded). Written by hand: no plotting library to install in CI."""

from __future__ import annotations

from html import escape

from measure import Episodes, Series, Window, guard_stats, window_stats

COLUMNS = [
    ("fault", None), ("consumer", None),
    ("coverage", "{coverage:.1f}%"), ("empty", "{empty}"),
    ("killed held max", "{dead_held_max:.1f}s"),
    ("deregistered held max", "{dereg_held_max:.1f}s"),
    ("missing max", "{missing_max:.1f}s"), ("missing host·s", "{missing_host_s:.0f}"),
    ("appear lag p50/max", "{appear_p50:.1f}/{appear_max:.1f}s"),
    ("never listed", "{never}"),
    ("back from dead", "{back}"),
]


def table(windows: list[Window], analysed: dict[str, tuple[Series, Episodes]]) -> str:
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if f is None else "---:" for _, f in COLUMNS) + "|"
    rows = [head, rule]
    for w in windows:
        for name, (series, eps) in analysed.items():
            stats = window_stats(series, eps, w)
            cells = [w.name, name] + [f.format(**stats) for _, f in COLUMNS[2:]]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary(windows: list[Window], analysed: dict[str, tuple[Series, Episodes]],
            node_samples) -> str:
    """One row per fault, the worst consumer for each figure (README's table)."""
    rows = ["| fault | coverage (worst consumer) | killed host held, max | live host missing, max "
            "| back from the dead (all consumers) | guard engaged (nodes) |",
            "|---|---:|---:|---:|---:|---:|"]
    for w in windows:
        stats = [window_stats(series, eps, w) for series, eps in analysed.values()]
        guards = guard_stats(node_samples, w)
        answered = [g for g in guards.values() if g["answered"]]
        rows.append(
            f"| {w.name} | {min(s['coverage'] for s in stats):.1f}% "
            f"| {max(s['dead_held_max'] for s in stats):.1f}s "
            f"| {max(s['missing_max'] for s in stats):.1f}s "
            f"| {sum(s['back'] for s in stats)} "
            f"| {sum(1 for g in answered if g['engaged'])}/{len(answered)} |")
    return "\n".join(rows)


def guard_table(windows: list[Window], node_samples) -> str:
    names = list(node_samples)
    rows = ["| fault | " + " | ".join(f"{n}: guard / max stale / min hosts" for n in names) + " |",
            "|---|" + "---:|" * len(names)]
    for w in windows:
        g = guard_stats(node_samples, w)
        cells = []
        for n in names:
            s = g[n]
            if not s["answered"]:
                cells.append("no answer")
            else:
                cells.append(f"{'engaged' if s['engaged'] else '-'} / {s['max_stale']} / {s['min_hosts']}")
        rows.append(f"| {w.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _corners(idx: list[int], col: list[int]) -> list[int]:
    """The samples where a step line turns (the last before a change and the first after
    it, plus both ends): the same picture, a fraction of the points."""
    keep = []
    for n, k in enumerate(idx):
        if n in (0, len(idx) - 1) or col[k] != col[idx[n - 1]] or col[k] != col[idx[n + 1]]:
            keep.append(k)
    return keep


def _runs(samples, gap: float = 1.5):
    """The node samples split where the node did not answer: no line across an outage."""
    run, prev = [], None
    for s in samples:
        if not s.up or (prev is not None and s.t - prev > gap):
            if run:
                yield run
            run = []
        if s.up:
            run.append(s)
            prev = s.t
    if run:
        yield run


COLOURS = {"live": "#999999", "listed": "#2a9d3a", "dead_held": "#d62728", "missing": "#ff8c00"}


def timeline(w: Window, analysed: dict[str, tuple[Series, Episodes]], node_samples,
             lead: float = 3.0) -> str:
    """An SVG of one fault: a panel per consumer, then one for the nodes' host counts."""
    t0, t1 = w.start - lead, w.until
    width, panel_h, left, right, top = 760, 90, 110, 20, 44
    names = list(analysed)
    height = top + (len(names) + 1) * (panel_h + 18) + 30
    span = max(t1 - t0, 1e-6)
    x = lambda t: left + (t - t0) / span * (width - left - right)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(w.name)}: '
           f'fault from {w.start - t0:.0f}s to {w.end - t0:.0f}s (shaded)</text>']
    legend = [("live (truth)", "live"), ("live listed", "listed"),
              ("dead listed", "dead_held"), ("live missing", "missing")]
    for k, (label, key) in enumerate(legend):
        lx = left + k * 120
        out.append(f'<line x1="{lx}" y1="30" x2="{lx + 16}" y2="30" stroke="{COLOURS[key]}" stroke-width="2"/>'
                   f'<text x="{lx + 20}" y="34">{label}</text>')
    panels = [(n, analysed[n][0]) for n in names] + [("nodes", None)]
    for p, (name, series) in enumerate(panels):
        y0 = top + p * (panel_h + 18)
        out.append(f'<rect x="{x(w.start):.1f}" y="{y0}" width="{x(w.end) - x(w.start):.1f}" '
                   f'height="{panel_h}" fill="#f3d9d9"/>')
        out.append(f'<rect x="{left}" y="{y0}" width="{width - left - right}" height="{panel_h}" '
                   f'fill="none" stroke="#cccccc"/>')
        out.append(f'<text x="4" y="{y0 + 14}">{escape(name)}</text>')
        if series is not None:
            idx = [k for k, t in enumerate(series.t) if t0 <= t < t1]
            top_v = max([series.live[k] for k in idx] + [series.listed[k] + series.dead_held[k] for k in idx] + [1])
            y = lambda v: y0 + panel_h - v / top_v * (panel_h - 4)
            out.append(f'<text x="4" y="{y0 + 28}" fill="#666">0..{top_v} hosts</text>')
            for key in ("live", "listed", "dead_held", "missing"):
                col = getattr(series, key)
                pts = " ".join(f"{x(series.t[k]):.1f},{y(col[k]):.1f}" for k in _corners(idx, col))
                if pts:
                    out.append(f'<polyline points="{pts}" fill="none" stroke="{COLOURS[key]}" stroke-width="1.5"/>')
        else:
            tops = [s.hosts for ss in node_samples.values() for s in ss if t0 <= s.t < t1] + [1]
            top_v = max(tops)
            y = lambda v: y0 + panel_h - v / top_v * (panel_h - 4)
            out.append(f'<text x="4" y="{y0 + 28}" fill="#666">hosts held,</text>'
                       f'<text x="4" y="{y0 + 40}" fill="#666">dashed: stale</text>'
                       f'<text x="4" y="{y0 + 52}" fill="#666">0..{top_v}</text>')
            shades = ["#1f77b4", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]
            for k, (node, ss) in enumerate(node_samples.items()):
                c = shades[k % len(shades)]
                for pts in _runs([s for s in ss if t0 <= s.t < t1]):
                    out.append(f'<polyline points="{" ".join(f"{x(s.t):.1f},{y(s.hosts):.1f}" for s in pts)}" '
                               f'fill="none" stroke="{c}" stroke-width="1.2"/>')
                    out.append(f'<polyline points="{" ".join(f"{x(s.t):.1f},{y(s.stale):.1f}" for s in pts)}" '
                               f'fill="none" stroke="{c}" stroke-width="1.2" stroke-dasharray="3,2"/>')
                out.append(f'<text x="{left + 4 + k * 40}" y="{y0 + 12}" fill="{c}">{escape(node)}</text>')
    axis_y = top + len(panels) * (panel_h + 18) - 6
    step = 5 if span <= 60 else 30 if span <= 400 else 60
    s = 0.0
    while s <= span:
        out.append(f'<text x="{x(t0 + s):.1f}" y="{axis_y}" text-anchor="middle">{s:.0f}s</text>')
        s += step
    out.append("</svg>")
    return "\n".join(out)
