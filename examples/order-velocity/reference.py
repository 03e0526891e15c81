#!/usr/bin/env python3
"""Naive reference for window examples: computes expected.jsonl without panes or Vigil.

    python3 examples/order-velocity/reference.py examples/order-velocity > examples/order-velocity/expected.jsonl

For every window [end - size, end) (end a multiple of slide since the epoch) it scans the events
that fall in it, following the documented rules: the watermark before an input line is the
largest event time read so far minus max_out_of_orderness (and, when the input ends, the largest
event time); an event counts in a window unless the watermark had already reached
end + allowed_lateness; an event that counts in none of its windows is a LATE_EVENT. A window is
emitted once when the watermark reaches its end, then again for every event that updates it
after that.
"""
import glob, json, math, os, sys, tomllib
from datetime import datetime, timezone

def parse_duration(text):
    units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
    total, num = 0, ""
    i = 0
    while i < len(text):
        if text[i].isdigit():
            num += text[i]; i += 1; continue
        unit = text[i:i + 2] if text[i:i + 2] == "ms" else text[i]
        total += int(num) * units[unit]; num = ""; i += len(unit)
    return total

def millis(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)

def rfc3339(ms):
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"

def number(x):
    return int(x) if float(x).is_integer() else x

def main(example):
    topo = tomllib.load(open(os.path.join(example, "topology.toml"), "rb"))
    ooo = parse_duration(topo.get("time", {}).get("max_out_of_orderness", "5m"))
    (pname, proc), = [(n, p) for n, p in topo["processes"].items() if p.get("template") == "window"]
    size = parse_duration(proc["size"]); slide = parse_duration(proc.get("slide", proc["size"]))
    lateness = parse_duration(proc.get("allowed_lateness", "0s"))
    name = proc.get("name", pname.upper())
    aggs = proc.get("aggregates", {})
    time_field = {t: e["time"] for t, e in topo["events"].items()}
    lines = []
    for f in sorted(glob.glob(os.path.join(example, "input", "*.jsonl"))):
        lines += [json.loads(l) for l in open(f) if l.strip()]
    windows = {}   # (key, end) -> [(watermark at arrival, event)]
    out = []
    max_t = None
    for ev in lines:
        if ev["type"] not in proc["events"]:
            continue
        wm = -math.inf if max_t is None else max_t - ooo
        t = millis(ev[time_field[ev["type"]]])
        parts = [ev["type"] if g == "type" else str(ev[g]) for g in proc.get("group_by", [])]
        key = "|".join(parts) if parts else "*"
        ends = [e for e in range((t // slide) * slide, t + size + 1, slide) if e - size <= t < e]
        live = [e for e in ends if e + lateness > wm]
        if not live:
            out.append({"kind": "dead_letter", "name": "LATE_EVENT", "key": key, "event_time": rfc3339(t)})
        for e in live:
            windows.setdefault((key, e), []).append((wm, ev))
        max_t = t if max_t is None else max(max_t, t)
    final_wm = max_t

    def result(key, end, events, firing):
        rec = {"kind": "window", "name": name, "key": key, "event_time": rfc3339(end),
               "window_start": rfc3339(end - size), "window_end": rfc3339(end)}
        for agg, spec in aggs.items():
            if spec == "count":
                rec[agg] = len(events); continue
            (fn, field), = spec.items()
            vals = [e[field] for e in events if isinstance(e.get(field), (int, float))]
            if fn == "sum": rec[agg] = number(round(sum(vals), 9))
            elif fn == "min": rec[agg] = number(min(vals)) if vals else None
            elif fn == "max": rec[agg] = number(max(vals)) if vals else None
            elif fn == "avg": rec[agg] = sum(vals) / len(vals) if vals else None
            elif fn == "distinct_count": rec[agg] = len({e[field] for e in events if field in e})
        rec["count"] = len(events)
        rec["firing"] = firing
        rec["process"] = pname
        return rec

    for (key, end), arrivals in sorted(windows.items()):
        for (wm, ev) in arrivals:  # scan: every event counted is in [start, end)
            assert end - size <= millis(ev[time_field[ev["type"]]]) < end
        on_time = [ev for wm, ev in arrivals if wm < end]
        if on_time and end <= final_wm:
            out.append(result(key, end, on_time, "final"))
        so_far = list(on_time)
        for wm, ev in arrivals:
            if wm >= end:
                so_far.append(ev)
                out.append(result(key, end, so_far, "late"))
    out.sort(key=lambda r: (r["event_time"], r["key"], r["kind"], r.get("count", 0)))
    for r in out:
        print(json.dumps(r))

if __name__ == "__main__":
    main(sys.argv[1])
