#!/usr/bin/env python3
"""A local stand-in for the Hugging Face hub, for tests/hub/run.sh (Python standard library only).

    server.py ROOT PORT_FILE LOG_FILE

ROOT/ORG/NAME/ holds the files of one model repository at one commit (its hash: a sha1 of the
file names and contents). The server answers the way the hub does:

    GET /api/models/ORG/NAME/revision/REV   {"id", "sha", "siblings": [{"rfilename": ...}]}
    HEAD|GET /ORG/NAME/resolve/REV/FILE     a regular file: 200, ETag "<git blob sha1>",
                                            X-Repo-Commit; an LFS file (*.safetensors): 302 to
                                            the storage, http://localhost:PORT/lfs/ORG/NAME/<sha256>
                                            (another host name, as the hub's storage is), with
                                            X-Linked-Etag, X-Linked-Size
    GET /lfs/ORG/NAME/<sha256>              the content, honouring "Range: bytes=N-" (206)

REV is main or the commit. Errors carry X-Error-Code / X-Error-Message like the hub's: an unknown
repository 401 RepoNotFound, an unknown revision 404 RevisionNotFound, an unknown file 404
EntryNotFound; a gated repository (a file .gated in its folder holds the accepted token) 401
GatedRepo without a token, 403 GatedRepo with another one. A folder with .renamed-to (holding
ORG/NAME) answers every request with a relative 307 redirect there, as the hub does for a renamed
repository; with .corrupt its LFS files are served with one byte changed. The first GET of each
LFS blob from offset 0 sends half the bytes and drops the connection (a client must resume).
Each request is logged on one line: METHOD PATH range=RANGE auth=TOKEN-OR-NONE.
"""
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import urllib.parse

ROOT, PORT_FILE, LOG_FILE = sys.argv[1], sys.argv[2], sys.argv[3]
LOCK = threading.Lock()
DROPPED = set()  # LFS blobs whose first download was already cut off


def repo_files(repo_dir):
    return sorted(f for f in os.listdir(repo_dir) if not f.startswith("."))


def repo_commit(repo_dir):
    h = hashlib.sha1()
    for f in repo_files(repo_dir):
        h.update(f.encode() + b"\0" + open(os.path.join(repo_dir, f), "rb").read())
    return h.hexdigest()


def marker(repo_dir, name):
    p = os.path.join(repo_dir, name)
    return open(p).read().strip() if os.path.exists(p) else None


def lfs_blob(repo_dir, sha):
    """The content of the repository's LFS file with this sha256, or None."""
    for f in repo_files(repo_dir) if os.path.isdir(repo_dir) else []:
        if f.endswith(".safetensors"):
            data = open(os.path.join(repo_dir, f), "rb").read()
            if hashlib.sha256(data).hexdigest() == sha:
                return data
    return None


class Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def log(self):
        auth = self.headers.get("Authorization", "")
        with LOCK, open(LOG_FILE, "a") as f:
            f.write("%s %s range=%s auth=%s\n" % (self.command, self.path, self.headers.get("Range", "-"),
                                                  auth[len("Bearer "):] if auth.startswith("Bearer ") else "-"))

    def answer(self, status, headers=(), body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code, message):
        self.answer(status, [("X-Error-Code", code), ("X-Error-Message", message),
                             ("Content-Type", "application/json")], json.dumps({"error": message}).encode())

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.log()
        path = urllib.parse.unquote(urllib.parse.urlparse(self.path).path)
        parts = path.strip("/").split("/")
        if parts[0] == "lfs" and len(parts) == 4:
            return self.serve_lfs(os.path.join(ROOT, parts[1], parts[2]), parts[3])
        api = parts[:2] == ["api", "models"]
        if api:
            parts = parts[2:]
        if len(parts) < 2:
            return self.error(404, "RepoNotFound", "Repository not found")
        org, name = parts[0], parts[1]
        repo_dir = os.path.join(ROOT, org, name)
        if not os.path.isdir(repo_dir):
            return self.error(401, "RepoNotFound", "Repository not found")
        renamed = marker(repo_dir, ".renamed-to")
        if renamed:
            new_path = self.path.replace("/%s/%s/" % (org, name), "/%s/" % renamed, 1)
            return self.answer(307, [("Location", new_path)])
        token = marker(repo_dir, ".gated")
        auth = self.headers.get("Authorization", "")
        if token and not api and auth != "Bearer " + token:
            status = 403 if auth else 401
            return self.error(status, "GatedRepo", "Access to model %s/%s is restricted." % (org, name))
        commit = repo_commit(repo_dir)
        if api and len(parts) == 4 and parts[2] == "revision":
            if parts[3] not in ("main", commit):
                return self.error(404, "RevisionNotFound", "Invalid rev id: " + parts[3])
            body = {"id": "%s/%s" % (org, name), "sha": commit,
                    "siblings": [{"rfilename": f} for f in repo_files(repo_dir)]}
            return self.answer(200, [("Content-Type", "application/json")], json.dumps(body).encode())
        if api or len(parts) < 5 or parts[2] != "resolve":
            return self.error(404, "EntryNotFound", "no such route")
        rev, fname = parts[3], "/".join(parts[4:])
        if rev not in ("main", commit):
            return self.error(404, "RevisionNotFound", "Invalid rev id: " + rev)
        fpath = os.path.join(repo_dir, fname)
        if fname.startswith(".") or not os.path.isfile(fpath):
            return self.error(404, "EntryNotFound", "Entry not found")
        data = open(fpath, "rb").read()
        common = [("X-Repo-Commit", commit)]
        if fname.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha.encode(), len(data))
            return self.answer(302, common + [
                ("Location", "http://localhost:%d/lfs/%s/%s/%s" % (self.server.server_port, org, name, sha)),
                ("X-Linked-Etag", '"%s"' % sha), ("X-Linked-Size", str(len(data))),
                ("ETag", '"%s"' % hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest())])
        etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return self.answer(200, common + [("ETag", '"%s"' % etag)], data)

    def serve_lfs(self, repo_dir, sha):
        data = lfs_blob(repo_dir, sha)
        if data is None:
            return self.answer(404, [], b"no such object")
        if marker(repo_dir, ".corrupt") is not None:
            data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng:
            start, status = int(rng.split("=")[1].split("-")[0]), 206
            if start >= len(data):
                return self.answer(416, [("Content-Range", "bytes */%d" % len(data))])
        body = data[start:]
        headers = [("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))] if status == 206 else []
        with LOCK:
            drop = start == 0 and self.path not in DROPPED and self.command == "GET"
            DROPPED.add(self.path)
        if not drop:
            return self.answer(status, headers, body)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_port))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
