#!/usr/bin/env python3
"""The study's "stronger model": a local OpenAI-compatible server (Python standard library only).

It is an ORACLE over the task of task.py, not a language model: it knows the right conversion
factors and computes every answer exactly. It plays the part GPT-4-turbo plays in the paper:

  (a) revise: a request with clair.h's reviser instructions (<task>/<student_answer> blocks) gets
      a minimal revision - the wrong factor and the wrong products fixed where the student wrote
      them, everything else copied - as "reasoning, a line 'Revised answer:', the revision";
  (b) answer: any other request (a task as the user message) gets a correct answer in the
      oracle's own style (different words and order from the target's);
  (c) judge: a request with <task>, <answer_1> and <answer_2> blocks (judge_template.json, the
      template run.sh gives `clair judge`) gets "Verdict: 1", "2" or "tie": the answer graded
      correct wins, then the one with more correct steps; equal grades are a tie.
It is reached only through ./clair (revise, generate, judge), as a real stronger model would be.

    oracle.py [--port 0] [--port-file FILE]    serves POST /v1/chat/completions and GET /v1/models
"""
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402


def block(text, tag):
    m = re.search(r"<" + tag + r">\n?(.*?)\n?</" + tag + ">", text, re.S)
    return m.group(1) if m else None


def reply_for(messages):
    user = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
    prompt, answer = block(user, "task"), block(user, "student_answer")
    if prompt is not None and answer is not None:
        reasoning, revision = task.revise_minimally(prompt, answer)
        return reasoning + "\nRevised answer:\n" + revision
    a, b = block(user, "answer_1"), block(user, "answer_2")
    if prompt is not None and a is not None and b is not None:
        ga, gb = task.grade(prompt, a), task.grade(prompt, b)
        verdict = "tie" if ga == gb else "1" if ga > gb else "2"
        return f"Graded: answer 1 {ga}, answer 2 {gb}.\nVerdict: {verdict}"
    p = task.parse_prompt(user.strip())
    if p is None:
        return "I can only answer unit conversions like 'Convert 5 km to m.'"
    return task.strong_answer(*p)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self.send_json(200, {"object": "list", "data": [{"id": "oracle", "object": "model"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(n))
            text = reply_for(req["messages"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.send_json(400, {"error": {"message": f"bad request: {e}"}})
            return
        self.send_json(200, {
            "id": "oracle", "object": "chat.completion", "model": req.get("model", "oracle"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        })

    def log_message(self, *args):
        pass


def serve(port, port_file):
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        os.replace(port_file + ".tmp", port_file)
    srv.serve_forever()


def main(argv):
    port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
    port_file = argv[argv.index("--port-file") + 1] if "--port-file" in argv else None
    serve(port, port_file)


if __name__ == "__main__":
    main(sys.argv[1:])
