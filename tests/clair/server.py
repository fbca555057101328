#!/usr/bin/env python3
"""A scripted OpenAI-compatible /chat/completions server for testing `clair generate`,
`clair revise` and `clair judge`. Python standard library only (CI runs it).

    server.py --port-file F [--latency-ms MS] [--expect-key KEY] [--models A,B]
              [--reasoning-model NAME]

Binds 127.0.0.1 on a free port and writes the port to F. Each request's behaviour comes from a
directive [[id=NAME script=A,B,C]]: in the student answer of a revise request, else anywhere in
the last user message (generate: the prompt; judge: the task, the id then gets "/ab" or "/ba"
for the order, "(A)" marking A's answer). Attempt k of id NAME (counted across the server's
life) does the k-th action; the last action repeats. Actions:

    ok          a reply: reasoning, the marker line "Revised answer:", then the revision
                (the answer with every "teh" -> "the" and " Indeed." appended)
    ref         the same in the paper's reference format ({teacher_reasoning} ... {corrected_student_solution} ...)
    429 | 500 | 404 | ...     that status (any number) with a JSON error body
    429raN      429 with "Retry-After: N"
    drop        close the connection without any reply
    badjson     200 with a truncated JSON body
    nomarker    200, a reply without the marker
    empty       200, the marker and nothing after it
    identical   200, the "revision" equals the answer
    rewrite     200, an unrelated text as the revision
    hang        sleep 3 s, then answer (for client timeouts)
    slowMS      sleep MS milliseconds, then ok
    length      200, finish_reason "length" (cut off by the token limit), half a reply
    lengthnull  200, finish_reason "length" and content null (a reasoning model out of tokens)
    echokey     400 whose error body echoes the Authorization header (a careless proxy)
    echokeyok   200, ok, with the Authorization header echoed inside the reply text
    badutf8     500 whose error body is not valid UTF-8
    cututf8     500 whose error body's 160-byte excerpt cuts a two-byte character in two
    badutf8ok   200 whose body is not valid UTF-8 (a bad reply, retried)
    noverdict   judge: a reply without a verdict

A generate request's answer is "Teh answer K to: PROMPT" (K: the attempt); a judge request
prefers the answer that contains "(better)", else says tie. Every reply reports "usage"
(prompt_tokens: request bytes / 4; completion_tokens: words). --models: other model names get
404 model_not_found. --reasoning-model NAME: requests for NAME that carry max_tokens or a
temperature other than 1 get 400, as OpenAI's reasoning models do. GET /bodies returns each
request's fields except messages, [[id, {field: value}], ...].

GET /log returns [[time, id, attempt, action, authorized], ...]; POST /reset clears the log.
--latency-ms adds a fixed delay to every completion (the benchmark's 200 ms server).
"""
import argparse, json, os, re, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ATTEMPTS = {}
LOG = []
BODIES = []
ARGS = None
JUDGE_RE = re.compile(r"<answer_1>\n(.*)\n</answer_1>\n\n<answer_2>\n(.*)\n</answer_2>", re.S)

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
        elif self.path == "/bodies":
            with LOCK:
                self.send(200, json.dumps(BODIES))
        else:
            self.send(404, '{"error": "not found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/reset":
            with LOCK:
                LOG.clear()
                BODIES.clear()
            return self.send(200, "{}")
        if self.path != "/v1/chat/completions":
            return self.send(404, '{"error": {"message": "unknown path"}}')
        authorized = True
        if ARGS.expect_key is not None:
            authorized = self.headers.get("Authorization") == "Bearer " + ARGS.expect_key
        req = json.loads(body)
        user = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
        m = ANSWER_RE.search(user)
        judge = JUDGE_RE.search(user)
        answer = m.group(1) if m else ""
        d = DIRECTIVE_RE.search(answer if m else user)
        ident, script = (d.group(1), d.group(2).split(",")) if d else ("?", ["ok"])
        if judge:
            ident += "/ab" if "(A)" in judge.group(1) else "/ba"
        with LOCK:
            k = ATTEMPTS.get(ident, 0)
            ATTEMPTS[ident] = k + 1
            action = script[min(k, len(script) - 1)]
            LOG.append([time.time(), ident, k + 1, action, authorized])
            BODIES.append([ident, {f: v for f, v in req.items() if f != "messages"}])
        if not authorized:
            return self.send(401, '{"error": {"message": "bad key"}}')
        if ARGS.models and req.get("model") not in ARGS.models.split(","):
            return self.send(404, json.dumps({"error": {"message": "The model `%s` does not exist" % req.get("model"),
                                                        "code": "model_not_found"}}))
        if ARGS.reasoning_model and req.get("model") == ARGS.reasoning_model:
            if "max_tokens" in req:
                return self.send(400, json.dumps({"error": {"message": "Unsupported parameter: 'max_tokens' is not "
                                                            "supported with this model. Use 'max_completion_tokens' instead."}}))
            if req.get("temperature", 1) != 1:
                return self.send(400, json.dumps({"error": {"message": "Unsupported value: 'temperature' does not "
                                                            "support %s with this model." % req["temperature"]}}))
        if action == "echokey":
            return self.send(400, json.dumps({"error": {"message": "invalid request; you sent Authorization: %s"
                                                        % self.headers.get("Authorization")}}))
        if action == "badutf8":
            return self.send(500, b'{"error": {"message": "caf\xe9 \xff\xfe broken"}}')
        if action == "cututf8":
            return self.send(500, '{"error":{"message":"' + "\u00e9" * 100 + '"}}')
        if action == "badutf8ok":
            return self.send(200, b'{"choices": [{"message": {"role": "assistant", "content": "Revised answer:\\n\xff"}}]}')
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
        if action.isdigit():
            return self.send(int(action), '{"error": {"message": "scripted %s"}}' % action)
        if action == "badjson":
            return self.send(200, '{"choices": [{"message": {"role": "assistant", "content": "Revised')
        finish = "stop"
        if action in ("length", "lengthnull"):
            finish = "length"
        if judge:
            a1, a2 = judge.group(1), judge.group(2)
            better = ("(better)" in a1) - ("(better)" in a2)
            content = "Verdict: " + ("1" if better > 0 else "2" if better < 0 else "tie")
            if action == "noverdict":
                content = "Both answers have merits."
            elif action == "length":
                content = "Comparing the two answers, the first"
        elif not m:
            content = "Teh answer %d to: %s" % (k + 1, user)
            if action == "length":
                content = content[:len(content) // 2]
            elif action == "echokeyok":
                content += " " + self.headers.get("Authorization", "")
        else:
            content = None
        if action == "lengthnull":
            content = None
        elif content is None:
            content = self.revise_content(action, answer)
            if content is None:
                return self.send(500, '{"error": {"message": "unknown scripted action %s"}}' % action)
        reply = {"id": "x", "object": "chat.completion", "model": req.get("model"),
                 "choices": [{"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": len(body) // 4,
                           "completion_tokens": len(content.split()) if content else 0}}
        self.send(200, json.dumps(reply))

    def revise_content(self, action, answer):
        if action == "length":
            return "The answer has spelling slips.\n\n**Revised answer:**\n" + revise(answer)[:10]
        if action == "echokeyok":
            return "Seen %s.\nRevised answer:\n%s" % (self.headers.get("Authorization", ""), revise(answer))
        return {
            "ok": "The answer has spelling slips.\n\n**Revised answer:**\n" + revise(answer),
            "ref": "{teacher_reasoning}: spelling.\n{corrected_student_solution}: " + revise(answer),
            "nomarker": "I think the answer is fine as it is.",
            "empty": "Nothing to add.\nRevised answer:\n",
            "identical": "It is already good.\nRevised answer:\n" + answer,
            "rewrite": "Start over.\nRevised answer:\nBananas are yellow fruits grown in warm places; "
                       "they are rich in potassium and are often eaten raw or cooked in desserts.",
        }.get(action)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--expect-key", default=None)
    ap.add_argument("--models", default=None)
    ap.add_argument("--reasoning-model", default=None)
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
