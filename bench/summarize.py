#!/usr/bin/env python3
"""Markdown tables, median [min-max] over runs, from wharf-load's JSON lines.

usage: summarize.py results.jsonl [more.jsonl ...]
"""
import json
import statistics
import sys
from collections import defaultdict

ROWS = [
    ("retr-big", "mb_per_s", "RETR 1 GiB, MB/s", 0),
    ("retr-big", "mb_per_server_cpu_s", "RETR, MB per server CPU-s", 0),
    ("stor-big", "mb_per_s", "STOR 512 MiB, MB/s", 0),
    ("stor-big", "mb_per_server_cpu_s", "STOR, MB per server CPU-s", 0),
    ("sessions", "sessions_per_s", "sessions/s (16 clients; login+PASV+RETR 4 KiB+QUIT)", 0),
    ("sessions", "sessions_per_server_cpu_s", "sessions per server CPU-s", 0),
    ("sessions", "p50_ms", "session latency p50, ms", 2),
    ("sessions", "p99_ms", "session latency p99, ms", 2),
    ("sessions", "errors", "session errors (per run)", 0),
    ("cmd-latency", "ops_per_s", "NOOP/PWD round trips/s (1 session, pinned)", 0),
    ("cmd-latency", "ops_per_server_cpu_s", "NOOP/PWD ops per server CPU-s", 0),
    ("cmd-latency", "p50_us", "NOOP/PWD p50, µs", 1),
    ("cmd-latency", "p99_us", "NOOP/PWD p99, µs", 1),
    ("list", "list_entries_per_s", "LIST 10k entries/s", 0),
    ("list", "list_entries_per_server_cpu_s", "LIST entries per server CPU-s", 0),
    ("list", "mlsd_entries_per_s", "MLSD 10k entries/s", 0),
    ("list", "mlsd_entries_per_server_cpu_s", "MLSD entries per server CPU-s", 0),
    ("ftps-retr-big", "mb_per_s", "FTPS RETR 1 GiB, MB/s", 0),
    ("ftps-retr-big", "mb_per_server_cpu_s", "FTPS RETR, MB per server CPU-s", 0),
    ("ftps-stor-big", "mb_per_s", "FTPS STOR 512 MiB, MB/s", 0),
    ("ftps-stor-big", "mb_per_server_cpu_s", "FTPS STOR, MB per server CPU-s", 0),
    ("ftps-sessions", "sessions_per_s", "FTPS sessions/s (AUTH TLS, PROT P, RETR 4 KiB)", 0),
    ("ftps-sessions", "sessions_per_server_cpu_s", "FTPS sessions per server CPU-s", 0),
    ("ftps-sessions", "errors", "FTPS session errors (per run)", 0),
]
# Many sessions at once (issue 19). {size}: the transfer size of the scenario's runs.
for _n in (100, 1000):
    for _d, _verb in (("down", "RETR"), ("up", "STOR")):
        _s = f"xfer-{_d}-{_n}"
        _l = f"{_n:,} × {_verb} {{size}} MiB at once"
        ROWS += [
            (_s, "mb_per_s", f"{_l}: aggregate MB/s", 0),
            (_s, "mb_per_server_cpu_s", f"{_l}: MB per server CPU-s", 0),
            (_s, "jain", f"{_l}: Jain's fairness index", 3),
            (_s, "slowest_mb_per_s", f"{_l}: slowest transfer, MB/s", 2),
            (_s, "errors", f"{_l}: failed transfers", 0),
        ]
ROWS += [
    ("ctl-latency", "idle_p50_us", "50 sessions' NOOP/PWD, idle server: p50 µs", 0),
    ("ctl-latency", "idle_p99_us", "… idle: p99 µs", 0),
    ("ctl-latency", "idle_p999_us", "… idle: p99.9 µs", 0),
    ("ctl-latency", "loaded_p50_us", "… while 100 RETR run: p50 µs", 0),
    ("ctl-latency", "loaded_p99_us", "… while 100 RETR run: p99 µs", 0),
    ("ctl-latency", "loaded_p999_us", "… while 100 RETR run: p99.9 µs", 0),
    ("ctl-latency", "p99_loaded_over_idle", "… p99 loaded ÷ p99 idle", 2),
    ("ctl-latency", "load_mb_per_s", "… the 100 RETR meanwhile, MB/s", 0),
    ("storm", "serve_all_s", "login storm (10,000 in 1 s): time to serve all, s", 2),
    ("storm", "failures", "login storm: failed logins", 0),
    ("storm", "p99_ms", "login storm: p99 login latency, ms", 0),
    ("storm", "logins_per_server_cpu_s", "login storm: logins per server CPU-s", 0),
    ("list100k", "list_entries_per_s", "LIST 100k entries/s", 0),
    ("list100k", "list_entries_per_server_cpu_s", "LIST 100k entries per server CPU-s", 0),
    ("list100k", "mlsd_entries_per_s", "MLSD 100k entries/s", 0),
    ("list100k", "mlsd_entries_per_server_cpu_s", "MLSD 100k entries per server CPU-s", 0),
    ("tree", "levels_per_s", "tree 1,000 deep (LIST + CWD per level): levels/s", 0),
    ("tree", "levels_per_server_cpu_s", "tree: levels per server CPU-s", 0),
]
IDLE_ROWS = [
    ("opened", "sessions opened", 0),
    ("logins_per_s", "logins/s while opening", 0),
    ("server_procs_held", "server processes", 0),
    ("rss_kib_per_session", "RSS KiB / session", 1),
    ("pss_kib_per_session", "PSS KiB / session", 1),
    ("noop_ok_pct", "% answering NOOP after hold", 0),
]


LOWER_IS_BETTER = {"p50_ms", "p99_ms", "errors", "p50_us", "p99_us", "idle_p50_us",
                   "idle_p99_us", "idle_p999_us", "loaded_p50_us", "loaded_p99_us",
                   "loaded_p999_us", "p99_loaded_over_idle", "serve_all_s", "failures"}


def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(v, digits):
    return f"{v:,.{digits}f}"


def cell(values, digits):
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} [{fmt(min(values), digits)}–{fmt(max(values), digits)}]"


def main(paths):
    recs = []
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        recs.append(json.loads(line))
                    except json.JSONDecodeError:
                        print(f"<!-- skipped a bad line in {p} -->")
    servers = []
    for r in recs:
        if r.get("server") not in servers and r.get("server") != "machine":
            servers.append(r.get("server"))
    by = defaultdict(list)  # (server, scenario) -> records
    for r in recs:
        key = r["scenario"]
        if key in ("idle", "ftps-idle"):
            key = f"{key} {r.get('requested')}"
        by[(r.get("server"), key)].append(r)

    print("MB = 10^6 bytes; median [min–max] over runs; 'per server CPU-s' = work per second")
    print("of server CPU (cpuacct cgroup of the server, else its /proc process tree).\n")
    if servers:
        peers = [s for s in servers if not s.startswith("wharf")]
        ratio = "wharf" in servers and peers
        print("| figure | " + " | ".join(servers) + (" | wharf ÷ best peer |" if ratio else " |"))
        print("|---|" + "---|" * (len(servers) + (1 if ratio else 0)))
        for scen, key, label, digits in ROWS:
            cells = [cell([r.get(key) for r in by[(s, scen)] if r.get("ok")], digits) for s in servers]
            if not any(c != "–" for c in cells):
                continue
            if "{size}" in label:
                sizes = sorted({r.get("size_mib") for s in servers for r in by[(s, scen)]
                                if r.get("ok") and r.get("size_mib")})
                label = label.replace("{size}", "/".join(f"{x:g}" for x in sizes) or "?")
            extra = ""
            if ratio:
                w = med([r.get(key) for r in by[("wharf", scen)] if r.get("ok")])
                ps = [med([r.get(key) for r in by[(s, scen)] if r.get("ok")]) for s in peers]
                ps = [p for p in ps if p is not None]
                best = (min(ps) if key in LOWER_IS_BETTER else max(ps)) if ps else None
                extra = f" {w / best:.2f}x |" if w is not None and best else " – |"
            print(f"| {label} | " + " | ".join(cells) + " |" + extra)
        idle_keys = sorted({k for (_, k) in by if k.split()[0] in ("idle", "ftps-idle")},
                           key=lambda k: (k.startswith("ftps"), int(k.split()[1])))
        for ik in idle_keys:
            for key, label, digits in IDLE_ROWS:
                cells = [cell([r.get(key) for r in by[(s, ik)] if r.get("opened")], digits) for s in servers]
                if any(c != "–" for c in cells):
                    print(f"| {ik}: {label} | " + " | ".join(cells) + (" | |" if ratio else " |"))
        print()
    # Failures and anomalies, verbatim.
    notes = []
    skipped = sorted({f"{r.get('server')} idle {r.get('requested')}" for r in recs
                      if str(r.get("error", "")).startswith("skipped")})
    if skipped:
        why = next(r["error"] for r in recs if str(r.get("error", "")).startswith("skipped"))
        notes.append(f"- skipped ({why}): " + ", ".join(skipped))
    for r in recs:
        who = f"{r.get('server')} {r['scenario']} {r.get('tag', '')}".strip()
        if str(r.get("error", "")).startswith("skipped"):
            continue
        if not r.get("ok"):
            notes.append(f"- {who}: {r.get('error')}")
        if r.get("errors"):
            notes.append(f"- {who}: {r['errors']} session errors, e.g. {r.get('first_errors', '')}")
        for k in ("list_error", "mlsd_error"):
            if k in r:
                notes.append(f"- {who}: {k}: {r[k]}")
        if r["scenario"] == "idle" and r.get("ok") and r.get("stop_reason") != "all opened":
            notes.append(f"- {who} {r.get('requested')}: stopped: {r.get('stop_reason')}")
    if notes:
        print("Failures and stop reasons:\n")
        print("\n".join(notes))
        print()
    lim = [r for r in recs if r.get("server") == "machine" and r.get("ok")]
    if lim:
        print("Machine limits (wharf-load self tests):\n")
        print("| test | MB/s | sender MB per CPU-s | receiver MB per CPU-s |")
        print("|---|---|---|---|")
        for t in ("raw-tcp", "raw-readwrite", "raw-sendfile"):
            rs = [r for r in lim if r.get("test") == t]
            if rs:
                b = rs[0].get("buf_kib")
                print(f"| {t} (buf {b} KiB) | {cell([r['mb_per_s'] for r in rs], 0)} | "
                      f"{cell([r.get('mb_per_sender_cpu_s') for r in rs], 0)} | "
                      f"{cell([r.get('mb_per_receiver_cpu_s') for r in rs], 0)} |")
        print()
        rw = med([r["mb_per_s"] for r in lim if r.get("test") == "raw-readwrite"])
        echo = med([r["p50_us"] for r in lim if r["scenario"] == "echo-floor" and "pinned" in r])
        fr = []
        for s in servers:
            parts = []
            for scen, label in (("retr-big", "RETR"), ("stor-big", "STOR")):
                v = med([r.get("mb_per_s") for r in by[(s, scen)] if r.get("ok")])
                if v and rw:
                    parts.append(f"{label} {100 * v / rw:.0f} % of raw read+write")
            v = med([r.get("p50_us") for r in by[(s, "cmd-latency")] if r.get("ok")])
            if v and echo:
                parts.append(f"NOOP p50 {v / echo:.2f}x the pinned echo floor")
            if parts:
                fr.append(f"- {s}: " + "; ".join(parts))
        if fr:
            print("Fractions of the machine's limits (medians):\n")
            print("\n".join(fr))
            print()
        print("| echo floor | round trips/s | p50 µs | p99 µs | echo ops per CPU-s |")
        print("|---|---|---|---|---|")
        for pinned, label in ((True, "pinned CPUs 0 / 1"), (False, "unpinned")):
            rs = [r for r in lim if r["scenario"] == "echo-floor" and ("pinned" in r) == pinned]
            if rs:
                print(f"| {label} | {cell([r['ops_per_s'] for r in rs], 0)} | "
                      f"{cell([r['p50_us'] for r in rs], 1)} | {cell([r['p99_us'] for r in rs], 1)} | "
                      f"{cell([r.get('ops_per_echo_cpu_s') for r in rs], 0)} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
