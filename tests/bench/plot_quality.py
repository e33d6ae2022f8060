#!/usr/bin/python3
"""Plot quality_bench results of two fixtures side by side (gnuplot).

Usage: tests/bench/plot_quality.py A.json LABEL_A B.json LABEL_B OUT.png

Left: greedy agreement with the full cache against the hot budget, one line per
policy (solid: A, dashed: B). Right: bytes fetched back from the tier per generated
token for the tiered policies (log scale; budgets where nothing was fetched are left out). Reads the JSON rows `quality_bench --json`
writes; needs gnuplot.
"""
import json
import os
import subprocess
import sys
import tempfile

POLICIES = ["tiered-exact", "tiered-adaptive", "tiered-prefetch", "drop", "window", "h2o"]
TIERED = ["tiered-exact", "tiered-adaptive", "tiered-prefetch"]


def series(rows, policy, key):
    """Inline gnuplot data; zero traffic (everything staged) has no place on a log axis
    and is left out."""
    pts = sorted((r["budget"], r[key]) for r in rows if r["policy"] == policy and key in r)
    return "\n".join("%g %g" % (b, v) for b, v in pts
                     if key == "agreement" or v > 0) + "\ne\n"


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    a, la, b, lb, out = sys.argv[1:]
    ra, rb = json.load(open(a)), json.load(open(b))
    plots_l, data_l, plots_r, data_r = [], "", [], ""
    for i, p in enumerate(POLICIES):
        for rows, lab, dt in ((ra, la, 1), (rb, lb, 2)):
            if not any(r["policy"] == p for r in rows):
                continue
            plots_l.append("'-' using 1:2 with linespoints lc %d dt %d lw 2 pt 7 title '%s, %s'"
                           % (i + 1, dt, p, lab))
            data_l += series(rows, p, "agreement")
            if p in TIERED:
                plots_r.append("'-' using 1:($2/1024) with linespoints lc %d dt %d lw 2 pt 7 "
                               "title '%s, %s'" % (i + 1, dt, p, lab))
                data_r += series(rows, p, "fetched_bytes_per_token")
    script = (
        "set terminal pngcairo size 1400,560 noenhanced\nset output '%s'\n"
        "set multiplot layout 1,2\nset grid\nset key bottom right font ',9'\n"
        "set xlabel 'hot budget (share of the sequence KV)'\n"
        "set title 'greedy agreement with the full cache'\nset ylabel 'agreement'\n"
        "set yrange [0.5:1.02]\nplot %s\n%s"
        "set title 'KV fetched back per generated token'\nset ylabel 'KiB / token'\n"
        "set yrange [*:*]\nset logscale y\nset key top right font ',9'\nplot %s\n%s"
        "unset multiplot\n" % (out, ", ".join(plots_l), data_l, ", ".join(plots_r), data_r))
    with tempfile.NamedTemporaryFile("w", suffix=".gp", delete=False) as f:
        f.write(script)
    try:
        subprocess.run(["gnuplot", f.name], check=True)
    finally:
        os.unlink(f.name)
    print("wrote", out)


if __name__ == "__main__":
    main()
