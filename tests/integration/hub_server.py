"""A small Hugging Face hub look-alike for tests: serves a folder of repos on 127.0.0.1.

It answers the calls the real `huggingface_hub` client makes (read from huggingface_hub 2.4):
- `GET /api/models/{repo}[/revision/{rev}]` (`HfApi.model_info`; `?blobs=true` adds sizes, blob
  ids and LFS sha256, which is what `files_metadata=True` asks for);
- `HEAD|GET /{repo}/resolve/{rev}/{file}` (`hf_hub_download`): `X-Repo-Commit`, `ETag`, and for
  LFS files `X-Linked-Etag` / `X-Linked-Size` (the sha256 and size the client caches blobs
  under), `Content-Length`, `Accept-Ranges` and `Range` (206 + `Content-Range`);
- errors the way the hub sends them: `X-Error-Code: RepoNotFound` (401, also for private repos
  without a token), `RevisionNotFound` / `EntryNotFound` (404).

A folder `ROOT/org/name/` is the repo `org/name`; its files are the repo's files. `.gguf`,
`.safetensors`, `.bin` and files over 1 MB are LFS files (the hub decides by .gitattributes).

It can fail on purpose (`fail()`): cut a download part-way, serve wrong bytes, answer a status,
stall. Every request is logged (`requests`, `body_bytes`) so tests can assert what was sent.

Run alone (benchmarks): `python tests/integration/hub_server.py ROOT [--port N]` prints its URL.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
LFS_MIN_SIZE = 1 << 20
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Fault:
    """One planned failure: the next `times` requests whose path matches `path` fail as `kind`.

    kind: "cut" (send `fraction` of the body, then drop the connection), "wrong_bytes" (same
    length, different bytes), "status" (answer `status`), "stall" (send `fraction`, then go
    silent for `seconds` before dropping the connection).
    """

    kind: str
    path: str = "*"
    times: int = 1
    status: int = 500
    fraction: float = 0.5
    seconds: float = 30.0
    method: str = "GET"


@dataclass
class RequestRecord:
    method: str
    path: str
    range_start: int | None
    status: int
    body_bytes: int = 0
    authorized: bool = False


@dataclass
class RepoSettings:
    token: str | None = None  # private repo: only this bearer token may read it
    advertised_sizes: dict[str, int] = field(default_factory=dict)  # lie about sizes in the listing
    extra_siblings: list[str] = field(default_factory=list)  # names listed but not on disk
    throttle_bytes_per_s: int | None = None  # slow downloads down (concurrency tests)


@dataclass(frozen=True)
class RepoFile:
    name: str
    path: Path
    size: int
    sha256: str
    git_sha1: str
    is_lfs: bool


def git_blob_sha1(data_path: Path) -> str:
    digest = hashlib.sha1(f"blob {data_path.stat().st_size}\0".encode())
    with open(data_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(data_path: Path) -> str:
    digest = hashlib.sha256()
    with open(data_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HubServer:
    """The server object tests hold: repos, planned faults, the request log."""

    def __init__(self, root: Path, port: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings: dict[str, RepoSettings] = {}
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._hash_cache: dict[tuple, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- setting up repos ------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], **settings) -> Path:
        folder = self.root / repo_id
        for name, content in files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            if isinstance(content, Path):
                try:  # a hard link serves a big model file without copying it
                    os.link(content, target)
                except OSError:
                    shutil.copyfile(content, target)
            else:
                target.write_bytes(content)
        folder.mkdir(parents=True, exist_ok=True)
        self.settings[repo_id] = RepoSettings(**settings)
        return folder

    def fail(self, kind: str, path: str | None = None, **kwargs) -> Fault:
        """Plan a fault; body faults (cut, wrong_bytes, stall) default to file downloads."""
        fault = Fault(kind, path or ("*" if kind == "status" else "*/resolve/*"), **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def body_bytes(self, pattern: str = "*", method: str = "GET") -> int:
        """Bytes of file content sent for requests whose path matches `pattern`."""
        with self._lock:
            return sum(r.body_bytes for r in self.requests if r.method == method and fnmatch.fnmatch(r.path, pattern))

    def downloads(self, pattern: str = "*/resolve/*") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and fnmatch.fnmatch(r.path, pattern)]

    # -- what the handler asks -------------------------------------------------------------
    def repo_files(self, repo_id: str) -> list[RepoFile] | None:
        folder = self.root / repo_id
        if not folder.is_dir() or repo_id.count("/") != 1:
            return None
        files = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            size = path.stat().st_size
            sha256, git_sha1 = self._hashes(path)
            is_lfs = name.endswith(LFS_SUFFIXES) or size > LFS_MIN_SIZE
            files.append(RepoFile(name, path, size, sha256, git_sha1, is_lfs))
        return files

    def commit_of(self, files: list[RepoFile]) -> str:
        listing = "\n".join(f"{f.name} {f.sha256}" for f in files)
        return hashlib.sha1(listing.encode()).hexdigest()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fnmatch.fnmatch(path, fault.path):
                    fault.times -= 1
                    return fault
        return None

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _hashes(self, path: Path) -> tuple[str, str]:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._hash_cache:
            self._hash_cache[key] = (file_sha256(path), git_blob_sha1(path))
        return self._hash_cache[key]


def _make_handler(hub: HubServer):
    class Handler(_HubHandler):
        server_state = hub

    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: HubServer

    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        record = RequestRecord(method, path, None, 0, authorized="authorization" in {k.lower() for k in self.headers})
        self.server_state.record(record)  # logged now and updated as bytes go out: tests watch it live
        try:
            fault = self.server_state.take_fault(method, path)
            if fault is not None and fault.kind == "status":
                return self._error(record, fault.status, "Internal Error" if fault.status >= 500 else None,
                                   "RepoNotFound" if fault.status == 401 else "EntryNotFound" if fault.status == 404 else None)
            if path.startswith("/api/models/"):
                return self._model_info(record, path[len("/api/models/"):], parse_qs(url.query))
            match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            if match:
                return self._resolve(record, method, match.group(1), match.group(2), match.group(3), fault)
            self._error(record, 404, "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- endpoints -------------------------------------------------------------------------
    def _open_repo(self, record: RequestRecord, repo_id: str):
        files = self.server_state.repo_files(repo_id)
        settings = self.server_state.settings.get(repo_id, RepoSettings())
        if files is None:
            self._error(record, 401, "Repository not found", "RepoNotFound")
            return None, None
        if settings.token is not None and self.headers.get("Authorization") != f"Bearer {settings.token}":
            if self.headers.get("Authorization"):
                self._error(record, 401, "Invalid credentials in Authorization header")
            else:
                self._error(record, 401, "Repository not found", "RepoNotFound")
            return None, None
        return files, settings

    def _model_info(self, record: RequestRecord, rest: str, query: dict) -> None:
        repo_id, _, revision = rest.partition("/revision/")
        files, settings = self._open_repo(record, repo_id)
        if files is None:
            return
        commit = self.server_state.commit_of(files)
        if revision and revision not in ("main", commit):
            return self._error(record, 404, f"Invalid rev id: {revision}", "RevisionNotFound")
        with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
        siblings = [_sibling(f, settings, with_blobs) for f in files]
        siblings += [{"rfilename": name} | ({"size": 1, "blobId": "0" * 40} if with_blobs else {})
                     for name in settings.extra_siblings]
        body = {"_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit, "private": settings.token is not None,
                "gated": False, "disabled": False, "tags": ["gguf"], "siblings": siblings}
        self._send_json(record, 200, body, {"X-Repo-Commit": commit})

    def _resolve(self, record, method: str, repo_id: str, revision: str, name: str, fault: Fault | None) -> None:
        files, settings = self._open_repo(record, repo_id)
        if files is None:
            return
        commit = self.server_state.commit_of(files)
        if revision not in ("main", commit):
            return self._error(record, 404, "Invalid rev id", "RevisionNotFound")
        entry = next((f for f in files if f.name == name), None)
        if entry is None:
            return self._error(record, 404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit})
        start, end = 0, entry.size - 1
        status = 200
        wanted = _RANGE.match(self.headers.get("Range", "").strip())
        if wanted and method == "GET":
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), end) if wanted.group(2) else end
            if start >= entry.size:
                return self._error(record, 416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{entry.size}"})
            status = 206
            record.range_start = start
        headers = {"X-Repo-Commit": commit, "ETag": f'"{entry.sha256 if entry.is_lfs else entry.git_sha1}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                   "Content-Length": str(end - start + 1)}
        if entry.is_lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        self._start(record, status, headers)
        if method == "GET":
            self._send_body(record, entry.path, start, end - start + 1, fault, settings)

    # -- bodies ----------------------------------------------------------------------------
    def _send_body(self, record, path: Path, start: int, length: int, fault: Fault | None, settings: RepoSettings):
        if fault is None and settings.throttle_bytes_per_s is None:
            with open(path, "rb") as handle:
                record.body_bytes = self.connection.sendfile(handle, start, length)
            return
        if fault is not None and fault.kind in ("cut", "stall"):
            length_to_send = int(length * fault.fraction)
        else:
            length_to_send = length
        with open(path, "rb") as handle:
            handle.seek(start)
            remaining = length_to_send
            while remaining > 0:
                block = handle.read(min(remaining, 64 * 1024))
                if fault is not None and fault.kind == "wrong_bytes":
                    block = bytes(b ^ 0x5A for b in block)
                self.wfile.write(block)
                record.body_bytes += len(block)
                remaining -= len(block)
                if settings.throttle_bytes_per_s:
                    self.server_state._stop.wait(len(block) / settings.throttle_bytes_per_s)
        if fault is not None and fault.kind == "stall":
            self.server_state._stop.wait(fault.seconds)
        if length_to_send < length:
            self._drop_connection()

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- responses -------------------------------------------------------------------------
    def _start(self, record: RequestRecord, status: int, headers: dict[str, str]) -> None:
        record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _send_json(self, record, status: int, body: dict, headers: dict | None = None) -> None:
        payload = json.dumps(body).encode()
        self._start(record, status, {"Content-Type": "application/json", "Content-Length": str(len(payload)),
                                     **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, record, status: int, message: str | None = None, code: str | None = None,
               headers: dict | None = None) -> None:
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        if message:
            extra["X-Error-Message"] = message
        self._send_json(record, status, {"error": message or "error"}, extra)


def _sibling(entry: RepoFile, settings: RepoSettings, with_blobs: bool) -> dict:
    sibling: dict = {"rfilename": entry.name}
    if not with_blobs:
        return sibling
    size = settings.advertised_sizes.get(entry.name, entry.size)
    sibling.update(size=size, blobId=entry.git_sha1)
    if entry.is_lfs:
        sibling["lfs"] = {"size": size, "sha256": entry.sha256, "pointerSize": 134}
    return sibling


# -- test helpers -------------------------------------------------------------------------------
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def write_gguf(path: Path, name: str = "tiny", n_bytes: int = 4096, license: str | None = "apache-2.0") -> Path:
    """A valid little GGUF (llama metadata, an F32, a Q8_0 and an I8 filler tensor of n_bytes).

    `name` goes into the metadata, so files with different names have different hashes.
    """
    import gguf
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_block_count(2)
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_chat_template(TEMPLATE)
    if license:
        writer.add_license(license)
    writer.add_tensor("token_embd.weight", np.ones((8, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((64, 2 * 34), dtype=np.uint8),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    filler = np.frombuffer(hashlib.shake_256(name.encode()).digest(n_bytes), dtype=np.int8)
    writer.add_tensor("filler.weight", filler)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_bytes(tmp: Path, name: str, n_bytes: int = 4096) -> Path:
    return write_gguf(tmp / "gguf-src" / f"{name}.gguf", name, n_bytes)


def start_hub(root: Path, monkeypatch=None) -> HubServer:
    server = HubServer(root).start()
    if monkeypatch is not None:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
    return server


def hearth_cli(*args: str, input: str | None = None):
    """`hearth ARGS` in this process (CliRunner): result.stdout, result.stderr, result.exit_code."""
    from typer.testing import CliRunner

    from hearth.cli.app import app

    return CliRunner().invoke(app, list(args), input=input)


HEARTH_MAIN = "import sys; sys.argv[0] = 'hearth'; from hearth.cli.app import main; main()"


def hearth_process(*args: str, env: dict | None = None, **popen):
    """`hearth ARGS` as its own process (for kills and concurrency), with this environment."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", HEARTH_MAIN, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a folder of repos the way the hub does.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = HubServer(args.root, args.port)
    print(server.url, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
