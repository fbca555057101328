#!/usr/bin/env python3
"""A scripted OpenAI-compatible /chat/completions server for testing `clair revise`.
Python standard library only (CI runs it).

    server.py --port-file F [--latency-ms MS] [--expect-key KEY]

Binds 127.0.0.1 on a free port and writes the port to F. Each request's behaviour comes from a
directive inside the student answer, [[id=NAME script=A,B,C]]: attempt k of id NAME (counted
across the server's life) does the k-th action; the last action repeats. Actions:

    ok          a reply: reasoning, the marker line "Revised answer:", then the revision
                (the answer with every "teh" -> "the" and " Indeed." appended)
    ref         the same in the paper's reference format ({teacher_reasoning} ... {corrected_student_solution} ...)
    429 | 500 | 503 | 400     that status with a JSON error body
    429raN      429 with "Retry-After: N"
    drop        close the connection without any reply
    badjson     200 with a truncated JSON body
    nomarker    200, a reply without the marker
    empty       200, the marker and nothing after it
    identical   200, the "revision" equals the answer
    rewrite     200, an unrelated text as the revision
    hang        sleep 3 s, then answer (for client timeouts)
    slowMS      sleep MS milliseconds, then ok

GET /log returns [[time, id, attempt, action, authorized], ...]; POST /reset clears the log.
--latency-ms adds a fixed delay to every completion (the benchmark's 200 ms server).
"""
import argparse, json, os, re, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ATTEMPTS = {}
LOG = []
ARGS = None

ANSWER_RE = re.compile(r"<student_answer>\n(.*)\n</student_answer>", re.S)
DIRECTIVE_RE = re.compile(r"\[\[id=(\S+) script=([^\]\s]+)\]\]")


def revise(answer):
    return answer.replace("teh", "the") + " Indeed."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go out in two writes: no 40 ms Nagle stall

    def log_message(self, *a):
        pass

    def send(self, status, body, headers=()):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass    # the client went away (a killed clair, a client timeout): expected in tests

    def do_GET(self):
        if self.path == "/log":
            with LOCK:
                self.send(200, json.dumps(LOG))
        else:
            self.send(404, '{"error": "not found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/reset":
            with LOCK:
                LOG.clear()
            return self.send(200, "{}")
        if not self.path.endswith("/chat/completions"):
            return self.send(404, '{"error": {"message": "unknown path"}}')
        authorized = True
        if ARGS.expect_key is not None:
            authorized = self.headers.get("Authorization") == "Bearer " + ARGS.expect_key
        req = json.loads(body)
        user = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
        m = ANSWER_RE.search(user)
        answer = m.group(1) if m else ""
        d = DIRECTIVE_RE.search(answer)
        ident, script = (d.group(1), d.group(2).split(",")) if d else ("?", ["ok"])
        with LOCK:
            k = ATTEMPTS.get(ident, 0)
            ATTEMPTS[ident] = k + 1
            action = script[min(k, len(script) - 1)]
            LOG.append([time.time(), ident, k + 1, action, authorized])
        if not authorized:
            return self.send(401, '{"error": {"message": "bad key"}}')
        if ARGS.latency_ms:
            time.sleep(ARGS.latency_ms / 1000.0)
        if action.startswith("slow"):
            time.sleep(int(action[4:]) / 1000.0)
            action = "ok"
        if action == "hang":
            time.sleep(3)
            action = "ok"
        if action == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if action.startswith("429ra"):
            return self.send(429, '{"error": {"message": "slow down"}}', [("Retry-After", action[5:])])
        if action in ("429", "500", "503", "400"):
            return self.send(int(action), '{"error": {"message": "scripted %s"}}' % action)
        if action == "badjson":
            return self.send(200, '{"choices": [{"message": {"role": "assistant", "content": "Revised')
        content = {
            "ok": "The answer has spelling slips.\n\n**Revised answer:**\n" + revise(answer),
            "ref": "{teacher_reasoning}: spelling.\n{corrected_student_solution}: " + revise(answer),
            "nomarker": "I think the answer is fine as it is.",
            "empty": "Nothing to add.\nRevised answer:\n",
            "identical": "It is already good.\nRevised answer:\n" + answer,
            "rewrite": "Start over.\nRevised answer:\nBananas are yellow fruits grown in warm places; "
                       "they are rich in potassium and are often eaten raw or cooked in desserts.",
        }.get(action)
        if content is None:
            return self.send(500, '{"error": {"message": "unknown scripted action %s"}}' % action)
        reply = {"id": "x", "object": "chat.completion", "model": req.get("model"),
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}]}
        self.send(200, json.dumps(reply))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--expect-key", default=None)
    ARGS = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.handle_error = lambda self, request, addr: None   # killed clients are expected
    ThreadingHTTPServer.request_queue_size = 256
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(ARGS.port_file + ".tmp", ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
