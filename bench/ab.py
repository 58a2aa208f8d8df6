#!/usr/bin/env python3
"""Two herd binaries, run alternately on `control 100x`: is a change a regression,
or is the machine noisy today?

    python3 bench/ab.py OLD_HERD NEW_HERD [RUNS]

Each run starts herder over 100 services, times ten rounds of 100 simultaneous
`GET /v1/services` (bench/ps.c) and stops it; the two binaries take turns, and
which goes first alternates, so both see the same machine. Prints each run's p50
and p99 (ms) and the medians. Needs what `bench/run` builds (target/bench/ps and
svc) and root, like the harness.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


class Args:
    keep = False


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = {"old": sys.argv[1], "new": sys.argv[2]}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    bench = harness.Bench(Args())
    res = {"old": [], "new": []}
    for i in range(runs):
        for v in ("old", "new") if i % 2 else ("new", "old"):
            harness.HERD = bins[v]

            def body(sup, t0):
                bench.wait_running(sup, t0, 100)
                deadline = time.monotonic() + 10
                while not os.path.exists(sup.socket) and time.monotonic() < deadline:
                    time.sleep(0.01)
                conc = []
                for _ in range(10):
                    conc += harness.ps_client(sup.socket, "conc", 100)
                s = sorted(conc)
                res[v].append((s[len(s) // 2] * 1e3, s[int(0.99 * len(s))] * 1e3))
                sup.stop(30)

            bench.run("herder", harness.services(100), body=body)
            print(f"{v} p50 {res[v][-1][0]:.2f} p99 {res[v][-1][1]:.2f}", flush=True)
    for v in ("old", "new"):
        p50 = statistics.median(x[0] for x in res[v])
        p99 = statistics.median(x[1] for x in res[v])
        print(f"{v}: median p50 {p50:.2f} ms, median p99 {p99:.2f} ms over {runs} runs")


if __name__ == "__main__":
    main()
