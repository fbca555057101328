#!/usr/bin/env python3
"""Test helper for tests/clair/test_tool.sh (Python standard library only).

  tool_check.py input PATH                 write the scripted input file (see server.py)
  tool_check.py slow-input PATH N MS       N lines that each take MS ms (kill/resume test)
  tool_check.py check IN OUT PORT [--resumed-from DONE.json] [--key KEY --stderr FILE]
                                           verify a finished run (exits 1 with reasons)
  tool_check.py done IN OUT PORT DONE.json record which lines have a record now
  tool_check.py stats IN.jsonl STATS.json  compare `clair stats --json` with Python's numbers
  tool_check.py gen-input PATH N MS        N prompts (every third conversational) taking MS ms
  tool_check.py judge-input A B N MS       two answer files on the same N prompts (B shuffled)
  tool_check.py units OUT N PARTS [--resumed-from DONE.json] [--kind kept]
                                           every (line, part) has exactly one record
  tool_check.py winrate A STATS.json       clair stats' win rate vs the expected one
  tool_check.py valid-json FILE...         every line is JSON in strict UTF-8
  tool_check.py usage OUT PRICE_IN PRICE_OUT MAX   the records' cost is at most MAX

Every input line carries its expected outcome in "expect": kept, dropped:REASON,
failed:ERROR[:ATTEMPTS]; the scripted server makes it happen.
"""
import json, os, sys, urllib.request

BAD_LINES = [  # (raw bytes, expected error) - written among the good lines
    (b'{"prompt": "p", "response": "unterminated', "bad_input"),
    (b'{"prompt": "p"}', "bad_input"),
    (b'{"prompt": "p", "response": "   "}', "bad_input"),
    (b'{"prompt": 7, "response": "x"}', "bad_input"),
    (b'{"prompt": "p", "response": "bad \xff utf8"}', "bad_input"),
    (b'[1, 2, 3]', "bad_input"),
]


def line(ident, script, expect, text="Teh cat sat on teh mat, and teh dog watched it.", **extra):
    rec = {"prompt": "Describe the scene (%s)." % ident,
           "response": "%s [[id=%s script=%s]]" % (text, ident, script), "expect": expect}
    rec.update(extra)
    return json.dumps(rec, ensure_ascii=False).encode("utf-8")


def make_input(path):
    rows = [
        line("ok1", "ok", "kept:1", id=1, meta={"source": "unit", "tags": ["a", "b"]}),
        line("ok2", "ok", "kept:1", text="Le café est très bon; teh croissant aussi. 東京 😀"),
        line("ok3", "ok", "kept:1", text="Line one of teh answer.\n\nLine two:\n- item\n- teh item"),
        line("ref1", "ref", "kept:1"),
        line("ra1", "429ra1,ok", "kept:2"),
        line("r429", "429,429,ok", "kept:3"),
        line("r500", "500,ok", "kept:2"),
        line("r503", "503,500,ok", "kept:3"),
        line("drop1", "drop,ok", "kept:2"),
        line("drop2", "drop,drop,ok", "kept:3"),
        line("bj1", "badjson,ok", "kept:2"),
        line("hang1", "hang,ok", "kept:2"),
        line("slow1", "slow300", "kept:1"),
        line("slow2", "slow200", "kept:1"),
        line("bjx", "badjson", "failed:bad_reply:3"),
        line("e500", "500", "failed:http_status:3"),
        line("e400", "400", "failed:http_status:1"),
        line("dropx", "drop", "failed:connection:3"),
        line("nm1", "nomarker", "dropped:no_marker:1"),
        line("em1", "empty", "dropped:empty_revision:1"),
        line("id1", "identical", "dropped:identical:1"),
        line("rw1", "rewrite", "dropped:edit_ratio:1"),
        line("late", "500,500,500,ok", "failed:http_status:3"),   # kept after --retry-failed
        # 4xx: only 408, 409, 425 and 429 are worth retrying
        line("e404", "404", "failed:http_status:1"),
        line("e422", "422", "failed:http_status:1"),
        line("e401", "401", "failed:http_status:1"),
        line("r408", "408,ok", "kept:2"),
        line("r409", "409,ok", "kept:2"),
        line("r425", "425,ok", "kept:2"),
    ]
    # interleave the bad lines and one blank line at fixed places
    merged = []
    bad = list(BAD_LINES)
    for i, r in enumerate(rows):
        merged.append(r)
        if i % 4 == 2 and bad:
            merged.append(bad.pop(0)[0])
    merged.extend(b for b, _ in bad)
    merged.insert(5, b"")
    with open(path, "wb") as f:
        f.write(b"\n".join(merged) + b"\n")


def slow_input(path, n, ms):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(line("s%d" % i, "slow%d" % ms, "kept:1", text="Teh answer number %d." % i) + b"\n")


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), "%s does not end with a newline" % path
    return [json.loads(l) for l in data.split(b"\n") if l.strip()]


def server_log(port):
    with urllib.request.urlopen("http://127.0.0.1:%s/log" % port) as r:
        return json.loads(r.read())


def outputs(out):
    return {"kept": read_jsonl(out), "dropped": read_jsonl(out + ".dropped.jsonl"),
            "failed": read_jsonl(out + ".failed.jsonl")}


def check(inp, out, port, resumed_from=None, key=None, stderr=None, retried=False):
    errs = []
    with open(inp, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    outs = outputs(out)
    where = {}
    for kind, recs in outs.items():
        for r in recs:
            n = r.get("clair_line")
            if n in where:
                errs.append("input line %s has two records (%s and %s)" % (n, where[n][0], kind))
            where[n] = (kind, r)
    log = server_log(port)
    attempts = {}
    for t, ident, k, action, auth in log:
        attempts.setdefault(ident, []).append((t, k, action, auth))
        if not auth:
            errs.append("request for %s without the right Authorization header" % ident)
    expected_lines = 0
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            if i in where:
                errs.append("blank line %d has a record" % i)
            continue
        expected_lines += 1
        if i not in where:
            errs.append("input line %d has no record" % i)
            continue
        kind, r = where[i]
        try:
            rec = json.loads(raw)
            exp = rec["expect"].split(":")
            if retried and rec["response"].split("script=")[1].split("]]")[0].endswith(",ok") and exp[0] == "failed":
                exp = ["kept"]
        except Exception:
            rec, exp = None, ["failed", "bad_input"]
        if kind != exp[0]:
            errs.append("line %d: %s, expected %s (%s)" % (i, kind, exp[0], r.get("message") or r.get("reason")))
            continue
        if kind == "failed" and r.get("error") != exp[1]:
            errs.append("line %d: error %s, expected %s (%s)" % (i, r.get("error"), exp[1], r.get("message")))
        if kind == "dropped" and r.get("reason") != exp[1]:
            errs.append("line %d: reason %s, expected %s" % (i, r.get("reason"), exp[1]))
        if rec is None:
            continue
        ident = rec["response"].split("[[id=")[1].split()[0]
        want_attempts = int(exp[-1]) if exp[-1].isdigit() else None
        got = attempts.get(ident, [])
        # libcurl re-sends once by itself when a reused keep-alive connection turns out dead
        # before any reply byte (up to 5 times, its CONN_MAX_RETRIES): a dropped connection may show up as several server hits per attempt
        ok_range = range(want_attempts, 6 * want_attempts + 1) if (want_attempts and "drop" in rec["response"]) else [want_attempts]
        if want_attempts is not None and resumed_from is None and not retried and len(got) not in ok_range:
            errs.append("line %d (%s): server saw %d attempts, expected %d" % (i, ident, len(got), want_attempts))
        if kind == "failed" and not retried and want_attempts is not None and r.get("attempts") != want_attempts:
            errs.append("line %d: record says %s attempts, expected %d" % (i, r.get("attempts"), want_attempts))
        if kind == "kept":
            want = rec["response"].replace("teh", "the") + " Indeed."
            if r.get("chosen") != want:
                errs.append("line %d: chosen %r, expected %r" % (i, r.get("chosen"), want))
            if r.get("rejected") != rec["response"] or r.get("prompt") != rec["prompt"]:
                errs.append("line %d: prompt/rejected not copied" % i)
            for f in ("rationale", "jaccard", "levenshtein", "edit_ratio", "token_edits", "clair_key"):
                if f not in r:
                    errs.append("line %d: field %s missing" % (i, f))
            for f in rec:
                if f not in ("prompt", "response") and r.get(f) != rec[f]:
                    errs.append("line %d: input field %s not kept" % (i, f))
            if r.get("levenshtein") != lev(r["chosen"], r["rejected"]):
                errs.append("line %d: levenshtein %s, python %s" % (i, r.get("levenshtein"), lev(r["chosen"], r["rejected"])))
        if ident == "ra1" and len(got) >= 2 and got[1][0] - got[0][0] < 0.95:
            errs.append("Retry-After 1 not honoured: retried after %.2f s" % (got[1][0] - got[0][0]))
    if len(where) != expected_lines:
        errs.append("%d records for %d non-blank input lines" % (len(where), expected_lines))
    if resumed_from:
        with open(resumed_from) as f:
            done = set(json.load(f))
        again = sorted({ident for ident in attempts} & done)
        if again:
            errs.append("lines finished before the restart were requested again: %s" % again)
    if key:
        for p in (out, out + ".dropped.jsonl", out + ".failed.jsonl") + ((stderr,) if stderr else ()):
            if os.path.exists(p) and key.encode() in open(p, "rb").read():
                errs.append("the API key appears in %s" % p)
    for e in errs:
        print("CHECK FAILED:", e)
    print("checked %d input lines: %d kept, %d dropped, %d failed; %d errors" % (
        expected_lines, len(outs["kept"]), len(outs["dropped"]), len(outs["failed"]), len(errs)))
    return 1 if errs else 0


def ident_of(r):
    """The server's id of a record's request (judge records: with the order)."""
    for f in ("rejected", "response", "prompt"):
        v = r.get(f)
        if isinstance(v, list):
            v = json.dumps(v)
        if v and "[[id=" in v:
            ident = v.split("[[id=")[1].split()[0]
            return ident + ("/" + r["order"] if "order" in r else "")
    return None


def done_ids(inp, out, dest):
    ids = []
    for recs in outputs(out).values():
        for r in recs:
            ident = ident_of(r)
            if ident:
                ids.append(ident)
    with open(dest, "w") as f:
        json.dump(ids, f)
    print("%d lines have a record" % len(ids))
    return 0


def lev(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def stats(inp, stats_json):
    with open(stats_json) as f:
        got = json.load(f)
    jac, levs = [], []
    for r in read_jsonl(inp):
        c, rj = r["chosen"], r["rejected"]
        if isinstance(c, list):
            c = [m for m in c if m["role"] == "assistant"][-1]["content"]
            rj = [m for m in rj if m["role"] == "assistant"][-1]["content"]
        A, B = set(c.split()), set(rj.split())
        jac.append(len(A & B) / len(A | B) if A | B else 1.0)
        levs.append(lev(c, rj))
    import statistics
    errs = []
    if got["pairs"] != len(jac):
        errs.append("pairs %s vs %d" % (got["pairs"], len(jac)))
    for name, v in (("jaccard", jac), ("levenshtein", levs)):
        if abs(got[name]["mean"] - statistics.mean(v)) > 1e-9 or abs(got[name]["median"] - statistics.median(v)) > 1e-9:
            errs.append("%s: clair %s, python mean %s median %s" % (name, got[name], statistics.mean(v), statistics.median(v)))
    for e in errs:
        print("CHECK FAILED:", e)
    print("stats of %d pairs match Python" % len(jac) if not errs else "stats mismatch")
    return 1 if errs else 0


def gen_input(path, n, ms):
    with open(path, "w") as f:
        for i in range(n):
            q = "Question g%d, in brief [[id=g%d script=slow%d]]" % (i, i, ms)
            p = q if i % 3 else [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
            f.write(json.dumps({"prompt": p, "idx": i}) + "\n")


def judge_input(pa, pb, n, ms):
    import random
    rows_a, rows_b = [], []
    for i in range(n):
        p = "Task j%d [[id=j%d script=slow%d]]" % (i, i, ms)
        rows_a.append({"prompt": p, "response": "Teh answer (A)" + (" (better)" if i % 2 == 0 else ""), "idx": i})
        rows_b.append({"prompt": p, "response": "Teh answer (B)" + (" (better)" if i % 3 == 0 else "")})
    random.Random(7).shuffle(rows_b)
    for path, rows in ((pa, rows_a), (pb, rows_b)):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def units(out, n, parts, resumed_from=None, kind=None):
    errs, seen = [], {}
    for k, recs in outputs(out).items():
        for r in recs:
            u = (r["clair_line"], r.get("clair_part", 0))
            if u in seen:
                errs.append("unit %s has two records" % (u,))
            seen[u] = k
            if kind and k != kind:
                errs.append("unit %s is %s, expected %s (%s)" % (u, k, kind, r.get("error") or r.get("reason")))
    for line in range(1, n + 1):
        for part in range(parts):
            if (line, part) not in seen:
                errs.append("unit %s has no record" % ((line, part),))
    if resumed_from:
        with open(resumed_from) as f:
            done = set(json.load(f))
        port = open(os.environ["PORT_FILE"]).read().strip()
        again = sorted({e[1] for e in server_log(port)} & done)
        if again:
            errs.append("finished before the restart, requested again: %s" % again)
    for e in errs:
        print("CHECK FAILED:", e)
    print("%d units, %d records; %d errors" % (n * parts, len(seen), len(errs)))
    return 1 if errs else 0


def winrate(pa, stats_json):
    with open(stats_json) as f:
        got = json.load(f)
    scores = []
    for r in read_jsonl(pa):
        i = r["idx"]
        a, b = i % 2 == 0, i % 3 == 0
        scores.append(1.0 if a and not b else 0.0 if b and not a else 0.5)
    want = sum(scores) / len(scores)
    ok = got["pairs"] == len(scores) and abs(got["win_rate"] - want) < 1e-6 and got["ci95"][0] <= want <= got["ci95"][1]
    print("win rate %.4f over %d pairs, expected %.4f over %d: %s" % (got["win_rate"], got["pairs"], want, len(scores),
                                                                      "ok" if ok else "MISMATCH"))
    return 0 if ok else 1


def valid_json(paths):
    bad = 0
    for p in paths:
        if not os.path.exists(p):
            continue
        with open(p, "rb") as f:
            for i, raw in enumerate(f.read().split(b"\n"), 1):
                if not raw.strip():
                    continue
                try:
                    json.loads(raw.decode("utf-8", "strict"))
                except Exception as e:
                    bad += 1
                    print("CHECK FAILED: %s line %d: %s" % (p, i, e))
    print("all lines valid JSON and UTF-8" if not bad else "%d invalid lines" % bad)
    return 1 if bad else 0


def usage(out, price_in, price_out, most):
    tin = tout = 0
    for recs in outputs(out).values():
        for r in recs:
            u = r.get("clair_usage")
            if u:
                tin += u["prompt_tokens"]
                tout += u["completion_tokens"]
    cost = (tin * price_in + tout * price_out) / 1e6
    print("records' cost $%.2f (%d + %d tokens), limit $%.2f" % (cost, tin, tout, most))
    return 0 if 0 < cost <= most else 1


def main():
    a = sys.argv[1:]
    if a[0] == "gen-input":
        gen_input(a[1], int(a[2]), int(a[3])); return 0
    if a[0] == "judge-input":
        judge_input(a[1], a[2], int(a[3]), int(a[4])); return 0
    if a[0] == "units":
        opts = dict(zip(a[4::2], a[5::2]))
        return units(a[1], int(a[2]), int(a[3]), opts.get("--resumed-from"), opts.get("--kind"))
    if a[0] == "winrate":
        return winrate(a[1], a[2])
    if a[0] == "valid-json":
        return valid_json(a[1:])
    if a[0] == "usage":
        return usage(a[1], float(a[2]), float(a[3]), float(a[4]))
    if a[0] == "input":
        make_input(a[1]); return 0
    if a[0] == "slow-input":
        slow_input(a[1], int(a[2]), int(a[3])); return 0
    if a[0] == "done":
        return done_ids(a[1], a[2], a[4])
    if a[0] == "stats":
        return stats(a[1], a[2])
    if a[0] == "check":
        opts = dict(zip(a[4::2], a[5::2]))
        return check(a[1], a[2], a[3], opts.get("--resumed-from"), opts.get("--key"), opts.get("--stderr"),
                     opts.get("--retried") == "1")
    if a[0] == "norequest":
        with open(a[2]) as f:
            done = set(json.load(f))
        again = sorted({e[1] for e in server_log(a[1])} & done)
        print("requested again after a restart: %s" % again if again else "no finished line was requested again")
        return 1 if again else 0
    print("unknown command", a[0])
    return 2


if __name__ == "__main__":
    sys.exit(main())
