#!/usr/bin/env python3
"""Writes report.md and its SVG plots from the tables the bench scripts left
in one directory (scripts/bench-report.sh runs them and then this):

  sandbox.md          scripts/bench-sandbox.sh
  nics-lossP.md       scripts/bench-nics.sh --loss P, one per loss level
  docker.md           scripts/bench-docker.sh
  runs.tsv            part, table file, seconds, exit status (optional)

It reads the Markdown tables as the scripts print them (the ratio column is
theirs, not recomputed) and draws with the standard library only, so it can
be run again on a directory by hand: scripts/bench-report.py target/bench
"""

import argparse
import html
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

# Rows of the loss plot, in legend order, with their colours.
LOSS_ROWS = {
    "native": "#222222",
    "nat": "#1f77b4",
    "sandbox": "#d62728",
    "relay": "#9467bd",
    "tap": "#2ca02c",
}
UP, DOWN = "#1f77b4", "#ff7f0e"
HIGHER, LOWER = "#1f77b4", "#9467bd"
FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


# --- reading the scripts' Markdown ------------------------------------------


def tables(text):
    """Every Markdown table in text, as (header cells, rows of cells)."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            if len(block) >= 2 and all(re.fullmatch(r":?-+:?", c) for c in block[1]):
                found.append((block[0], block[2:]))
            block = []
    return found


def number(cell):
    """The cell as a float, or None for FAILED, '-', '—' and the like."""
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return None


def read_nics(path):
    """(loss as a fraction, {row: (up, up×, down, down×)}, {row: the cells as
    written}) of one bench-nics table."""
    text = path.read_text()
    m = re.search(r"TCP loss ([0-9.eE+-]+) each way", text)
    loss = float(m.group(1)) if m else float(path.stem.removeprefix("nics-loss"))
    rows, raw = {}, {}
    for header, body in tables(text)[:1]:
        for cells in body:
            if len(cells) >= 5:
                rows[cells[0]] = tuple(number(c) for c in cells[1:5])
                raw[cells[0]] = cells[1:5]
    return loss, rows, raw


def percent(loss):
    return "0" if loss == 0 else f"{loss * 100:g}%"


def body_of(text):
    """A script's Markdown without its own top heading."""
    return "\n".join(l for l in text.splitlines() if not l.startswith("# ")).strip()


# --- SVG --------------------------------------------------------------------


def esc(s):
    return html.escape(str(s), quote=True)


def text_width(s, size):
    return len(s) * size * 0.56


class Svg:
    def __init__(self, width, height):
        self.w, self.h, self.parts = width, height, []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", colour="#000", extra=""):
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{colour}" {FONT} {extra}>{esc(s)}</text>'
        )

    def line(self, x1, y1, x2, y2, colour="#000", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{colour}" stroke-width="{width}"{d}/>'
        )

    def rect(self, x, y, w, h, colour):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{colour}"/>')

    def write(self, path):
        path.write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}">\n'
            f'<rect width="100%" height="100%" fill="#fff"/>\n' + "\n".join(self.parts) + "\n</svg>\n"
        )


def log_ticks(lo, hi):
    """Tick values 1, 2, 5 per decade covering [lo, hi], and the axis ends."""
    a = 10 ** math.floor(math.log10(lo))
    b = 10 ** math.ceil(math.log10(hi))
    ticks, d = [], a
    while d <= b * 1.0001:
        for m in (1, 2, 5):
            if a * 0.9999 <= d * m <= b * 1.0001:
                ticks.append(d * m)
        d *= 10
    return ticks, a, b


def fmt_tick(v):
    return f"{v:g}"


def loss_plot(runs, path):
    """Throughput against loss, log scale, up and down side by side.

    runs: {loss: {row: (up, up×, down, down×)}}."""
    losses = sorted(runs)
    rows = [r for r in LOSS_ROWS if any(r in runs[l] for l in losses)]
    values = [
        v
        for l in losses
        for r in rows
        for v in (runs[l].get(r, (None,) * 4)[0], runs[l].get(r, (None,) * 4)[2])
        if v and v > 0
    ]
    if not values:
        return False
    ticks, lo, hi = log_ticks(min(values), max(values))
    pw, ph, left, top, gap = 330, 300, 60, 50, 60
    svg = Svg(left + 2 * pw + gap + 30, top + ph + 90)
    svg.text(svg.w / 2, 22, "iperf3 throughput against TCP loss in the peer namespace (median)",
             14, "middle", extra='font-weight="bold"')

    def y_of(v):
        return top + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

    for p, (title, idx) in enumerate([("up: the client in A sends", 0), ("down (-R): B sends", 2)]):
        x0 = left + p * (pw + gap)

        def x_of(i):
            return x0 + (i + 0.5) * pw / len(losses)

        svg.text(x0 + pw / 2, top - 10, title, 12, "middle")
        for t in ticks:
            y = y_of(t)
            major = abs(math.log10(t) - round(math.log10(t))) < 1e-9
            svg.line(x0, y, x0 + pw, y, "#ccc" if major else "#eee")
            svg.text(x0 - 5, y + 4, fmt_tick(t), 10, "end", "#444")
        svg.line(x0, top, x0, top + ph, "#000")
        svg.line(x0, top + ph, x0 + pw, top + ph, "#000")
        for i, l in enumerate(losses):
            svg.line(x_of(i), top + ph, x_of(i), top + ph + 4)
            svg.text(x_of(i), top + ph + 17, percent(l), 11, "middle")
        svg.text(x0 + pw / 2, top + ph + 34, "TCP packets dropped in B, each way", 11, "middle", "#444")
        if p == 0:
            svg.text(16, top + ph / 2, "Gbit/s (log scale)", 11, "middle", "#444",
                     f'transform="rotate(-90 16 {top + ph / 2})"')
        for r in rows:
            colour = LOSS_ROWS[r]
            pts = []
            for i, l in enumerate(losses):
                v = runs[l].get(r, (None,) * 4)[idx]
                pts.append((x_of(i), y_of(v)) if v and v > 0 else None)
            for a, b in zip(pts, pts[1:]):
                if a and b:
                    svg.line(a[0], a[1], b[0], b[1], colour, 2)
            for pt in pts:
                if pt:
                    svg.add(f'<circle cx="{pt[0]:.1f}" cy="{pt[1]:.1f}" r="3.5" fill="{colour}"/>')
    # Legend under the panels.
    x = left
    y = top + ph + 62
    for r in rows:
        svg.line(x, y - 4, x + 22, y - 4, LOSS_ROWS[r], 2)
        svg.add(f'<circle cx="{x + 11:.1f}" cy="{y - 4:.1f}" r="3.5" fill="{LOSS_ROWS[r]}"/>')
        svg.text(x + 28, y, r, 12)
        x += 40 + text_width(r, 12) + 20
    svg.write(path)
    return True


def ratio_bars(title, labels, series, path, note=None, colours=None):
    """Horizontal bars of ratios on a log scale, from 1 (the reference, a
    solid line) out to the value: left is below the reference, right above,
    and a half is as far from 1 as a double.

    series: [(name, colour, [value or None per label])]; colours: per label
    colour overriding the series' (for one-series charts)."""
    vals = [v for _, _, vs in series for v in vs if v is not None]
    if not vals:
        return False
    floor = 0.005  # a ratio printed as 0.00 is drawn as this
    lo_v = max(min(vals + [1.0]), floor)
    hi_v = max(vals + [1.0])
    ticks, _, _ = log_ticks(lo_v, hi_v)
    below = [t for t in ticks if t <= lo_v * 1.0001]
    above = [t for t in ticks if t >= hi_v * 0.9999]
    ticks = [t for t in ticks if (below[-1] if below else ticks[0]) <= t <= (above[0] if above else ticks[-1])]
    lo, hi = ticks[0], ticks[-1]
    bar, inner = 14, 4
    group = len(series) * bar + (len(series) - 1) * inner + 12
    left = 20 + max(text_width(l, 11) for l in labels)
    pw, pad = 440, 44  # pad: room for a value beside the axis' ends
    top = 40 + (18 if len(series) > 1 else 0)
    plot_h = group * len(labels)
    width = max(left + pw + 20, left + text_width(note or "", 10) + 20, text_width(title, 14) + 40)
    svg = Svg(int(width), int(top + plot_h + 40 + (18 if note else 0)))
    svg.text(svg.w / 2, 20, title, 14, "middle", extra='font-weight="bold"')

    def x_of(v):
        v = max(v, floor)
        return left + pad + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo) or 1) * (pw - 2 * pad)

    for t in ticks:
        major = abs(math.log10(t) - round(math.log10(t))) < 1e-9
        svg.line(x_of(t), top - 4, x_of(t), top + plot_h, "#ddd" if major else "#f0f0f0")
        svg.text(x_of(t), top + plot_h + 14, fmt_tick(t), 10, "middle", "#444")
    svg.text(left + pw / 2, top + plot_h + 30, "ratio (log scale; 1 = the reference)", 10, "middle", "#444")
    for i, label in enumerate(labels):
        y = top + i * group + 6
        svg.text(left - 8, y + group / 2 - 2, label, 11, "end")
        for j, (name, colour, vs) in enumerate(series):
            v = vs[i]
            by = y + j * (bar + inner)
            if v is None:
                svg.text(x_of(1) + 4, by + bar - 3, "failed", 10, colour="#999")
                continue
            c = colours[i] if colours else colour
            x1, x2 = sorted((x_of(1), x_of(v)))
            svg.rect(x1, by, max(x2 - x1, 1), bar, c)
            if v < 1:
                svg.text(x1 - 4, by + bar - 3, f"{v:g}", 10, "end")
            else:
                svg.text(x2 + 4, by + bar - 3, f"{v:g}", 10)
    svg.line(x_of(1), top - 6, x_of(1), top + plot_h, "#000", 1.5)
    if len(series) > 1:
        x = left
        for name, colour, _ in series:
            svg.rect(x, 31, 12, 12, colour)
            svg.text(x + 16, 41, name, 11)
            x += 30 + text_width(name, 11)
    if note:
        svg.text(left, svg.h - 10, note, 10, colour="#444")
    svg.write(path)
    return True


# --- the report -------------------------------------------------------------


def git_rev(repo):
    try:
        rev = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "diff", "--quiet", "HEAD"]).returncode != 0
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def lower_is_better(label_or_unit):
    return bool(re.search(r"ns/call|KiB|\bms\b", label_or_unit))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--command", default="", help="the command that made the tables")
    ap.add_argument("--smolvisor", default="", help="the binary measured")
    args = ap.parse_args()
    d = args.dir
    repo = str(Path(__file__).resolve().parent.parent)
    out = []
    w = out.append

    w("# smolvisor benchmark report\n")
    mem = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f", {kib / 1048576:.1f} GiB RAM"
    except (OSError, AttributeError):
        pass
    w(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    w(f"- Machine: Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu_model()}){mem}")
    w(f"- Commit: {git_rev(repo)}")
    if args.smolvisor:
        w(f"- Binary: `{args.smolvisor}`")
    if args.command:
        w(f"- Command: `{args.command}`")
    w(f"- Load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}"
      " (the machine is shared: compare rows of one run, not runs)")
    w("")

    runs_tsv = d / "runs.tsv"
    if runs_tsv.exists():
        w("| part | table | seconds | exit status |")
        w("|---|---|---:|---:|")
        for line in runs_tsv.read_text().splitlines():
            part, table, secs, rc = line.split("\t")
            w(f"| {part} | [{table}]({table}) | {secs} | {rc if rc == '0' else f'**{rc}**'} |")
        w("")
    w("Every table below is as its script wrote it. Each script runs its rows interleaved "
      "(every row once per repetition, in turn) so that noise on the machine hits them alike, "
      "and reports the median of the repetitions. A ratio is the row's value over the "
      "reference's in the same run: native Linux (bench-sandbox, bench-nics) or runc "
      "(bench-docker). For throughput and rates (Gbit/s, conn/s, req/s) 1.00 is parity and "
      "lower is slower; for times and memory (ns/call, ms, KiB) the ratio is the slowdown "
      "or the growth, so there higher is worse.\n")

    # Sandbox.
    f = d / "sandbox.md"
    if f.exists():
        text = f.read_text()
        w("## The sandbox against native Linux (scripts/bench-sandbox.sh)\n")
        w(body_of(text) + "\n")
        # Columns: the row, one "VALUE (RATIO×)" per smolvisor network mode
        # ("smolvisor MODE (/runc)"), then runc's value.
        labels, cols, series = [], [], []
        for header, body in tables(text)[:1]:
            modes = [h.removeprefix("smolvisor ").removesuffix(" (/runc)") for h in header[1:-1]]
            values = [[] for _ in modes]
            for cells in body:
                if len(cells) != len(header):
                    continue
                labels.append(re.sub(r"\s*\([^()]*median of[^()]*\)$", "", cells[0].replace("`", ""))[:70])
                cols.append(LOWER if lower_is_better(cells[0]) else HIGHER)
                for i, cell in enumerate(cells[1:-1]):
                    m = re.search(r"\(([0-9.]+)×\)", cell)
                    values[i].append(float(m.group(1)) if m else None)
            palette = [HIGHER, LOWER, "#2a9d8f", "#e76f51"]
            series = [(f"smolvisor {m}", palette[i % len(palette)], values[i]) for i, m in enumerate(modes)]
        if series and ratio_bars("bench-docker: smolvisor / runc", labels, series,
                                 d / "docker-ratio.svg",
                                 note="per network mode; for a start time lower is better",
                                 colours=cols if len(series) == 1 else None):
            w("![smolvisor / runc per row](docker-ratio.svg)\n")

    # What went wrong along the way, from the parts' logs.
    notes = []
    for log in sorted(d.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"FAILED|timed out|note:|error", line, re.I):
                notes.append(f"{log.name}: {line.strip()}")
    if notes:
        w("## Failures and notes from the logs\n")
        w("```")
        out.extend(notes[:40])
        if len(notes) > 40:
            w(f"... {len(notes) - 40} more lines like these in the logs")
        w("```\n")
    (d / "report.md").write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {d / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
