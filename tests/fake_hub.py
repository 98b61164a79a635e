"""A stand-in for the Hugging Face hub on loopback, for offline tests.

    with FakeHub(root_dir, gated={"acme/secret"}) as hub:
        hub.add_repo("ShaomuTan/EC40", ec40_dir, repo_type="dataset", commit=EC40_REVISION)
        use_fake_hub(monkeypatch, hub, tmp_path / "hf-cache")          # in-process
        subprocess.run(cmd, env=hub.env(tmp_path / "hf-cache"))       # or: a child process

Serves, for HEAD and GET, ``/{repo_id}/resolve/{revision}/{path}`` (models) and
``/datasets/{repo_id}/resolve/{revision}/{path}`` with the headers huggingface_hub 2.4.0 checks
(``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag`` / ``X-Linked-Size``, ``Content-Length``;
``Range`` is honoured), the JSON of ``/api/{models,datasets}/{repo_id}[/revision/{rev}]`` and
``/api/{models,datasets}/{repo_id}/tree/{rev}[/{path}]``, and errors the way the hub does:
``X-Error-Code: EntryNotFound`` / ``RevisionNotFound`` / ``RepoNotFound`` (404) and, for a gated repo
without the right ``Authorization: Bearer <token>``, 401 (no token) / 403 (wrong token) with
``X-Error-Code: GatedRepo``, which ``hf_raise_for_status`` turns into ``GatedRepoError``.

Repos come from ``root_dir`` laid out like the URLs (``root_dir/{owner}/{name}/...`` for models,
``root_dir/datasets/{owner}/{name}/...`` for datasets) or from ``add_repo``. A repo answers to the
revision ``main`` and to its commit (``commit=``, else a fixed fake sha derived from its id).

Endpoint: huggingface_hub copies ``HF_ENDPOINT`` at import time into
``huggingface_hub.constants.ENDPOINT`` and ``HUGGINGFACE_CO_URL_TEMPLATE`` (the template
``hf_hub_download`` uses) and the module-level ``huggingface_hub.hf_api.api`` (``model_info`` etc.);
likewise ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN_PATH``. Setting the environment alone
is therefore not enough in a process that already imported it. ``use_fake_hub`` sets the
environment *and* patches those copies (and any ``ENDPOINT`` copied into other loaded modules, and
the endpoint of transformers' shared ``HfApi``, which keeps the hub it was first used under);
``FakeHub.env`` gives the environment for a child process, which is the most robust way.
``HF_TOKEN`` is read at each request, so ``monkeypatch.setenv("HF_TOKEN", hub.token)`` suffices.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_TOKEN = "hf_fake_token_for_tests"
# Served with X-Linked-Etag (sha256) / X-Linked-Size like the hub's LFS files.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".parquet", ".arrow", ".h5", ".msgpack")
LFS_MIN_SIZE = 10 << 20


@dataclass
class Repo:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    directory: Path
    commit: str
    gated: bool = False


@dataclass
class Request:
    method: str
    path: str  # URL path, unquoted
    query: dict[str, list[str]]
    status: int
    authorization: str | None  # the Authorization header sent, if any
    headers: dict[str, str] = field(default_factory=dict)


def fake_commit(repo_type: str, repo_id: str) -> str:
    return hashlib.sha1(f"fakehub:{repo_type}:{repo_id}".encode()).hexdigest()


def _git_blob_sha1(data_path: Path) -> str:
    h = hashlib.sha1(f"blob {data_path.stat().st_size}\0".encode())
    with open(data_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(data_path: Path) -> str:
    h = hashlib.sha256()
    with open(data_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FakeHub:
    """Context manager: a hub-compatible HTTP server on 127.0.0.1 at ``.endpoint``."""

    def __init__(self, root_dir: str | os.PathLike | None = None, *, gated: Iterable[str] = (),
                 token: str = DEFAULT_TOKEN, commits: dict[str, str] | None = None):
        self.root_dir = Path(root_dir) if root_dir is not None else None
        self.gated: set[str] = set(gated)  # repo ids (model or dataset) that need ``token``
        self.token = token
        self.commits = dict(commits or {})  # repo id -> commit, for repos found under root_dir
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._hash_cache: dict[tuple[str, int, int, str], str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- setup ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, directory: str | os.PathLike, *, repo_type: str = "model",
                 commit: str | None = None, gated: bool | None = None) -> Repo:
        """Serve ``directory`` as repo ``repo_id``; ``gated=True`` adds it to ``self.gated``."""
        if repo_type not in ("model", "dataset"):
            raise ValueError(f"repo_type must be 'model' or 'dataset', not {repo_type!r}")
        if gated:
            self.gated.add(repo_id)
        repo = Repo(repo_id, repo_type, Path(directory), commit or self.commits.get(repo_id)
                    or fake_commit(repo_type, repo_id))
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        found = self.repos.get((repo_type, repo_id))
        if found is None and self.root_dir is not None and ".." not in repo_id.split("/"):
            directory = self.root_dir / ("datasets" if repo_type == "dataset" else "") / repo_id
            if directory.is_dir():
                found = Repo(repo_id, repo_type, directory,
                             self.commits.get(repo_id) or fake_commit(repo_type, repo_id))
        if found is not None:
            found.gated = repo_id in self.gated
        return found

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not running (use it as a context manager)")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="FakeHub", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # -- environment ---------------------------------------------------------------------------
    def env(self, cache_dir: str | os.PathLike, *, token: str | None = None,
            base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that must use this hub (and nothing else)."""
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN",
                    "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
            env.pop(key, None)
        cache_dir = Path(cache_dir)
        env.update({
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_CACHE": str(cache_dir),
            "HF_XET_CACHE": str(cache_dir / "xet"),
            "HF_TOKEN_PATH": str(cache_dir / "no-token"),  # never a real token file
            "HF_STORED_TOKENS_PATH": str(cache_dir / "no-stored-tokens"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "NO_PROXY": ",".join(filter(None, ["127.0.0.1", "localhost", env.get("NO_PROXY", "")])),
        })
        env["no_proxy"] = env["NO_PROXY"]
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Requests logged so far, filtered by method and a substring of the path."""
        return sum(1 for r in list(self.requests)
                   if (method is None or r.method == method) and contains in r.path)

    # -- hashing -------------------------------------------------------------------------------
    def _hash(self, path: Path, kind: str) -> str:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size, kind)
        with self._lock:
            if key in self._hash_cache:
                return self._hash_cache[key]
        value = _sha256(path) if kind == "sha256" else _git_blob_sha1(path)
        with self._lock:
            self._hash_cache[key] = value
        return value


def use_fake_hub(monkeypatch: Any, hub: FakeHub, cache_dir: str | os.PathLike, *,
                 token: str | None = None) -> None:
    """Point this process's huggingface_hub (and transformers) at ``hub`` for one test.

    Sets the environment (as ``hub.env``) and patches the values huggingface_hub copied at import
    time. ``token``: set ``HF_TOKEN`` (default: unset, and no token file).
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api

    env = hub.env(cache_dir, token=token)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN",
                "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key in ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_XET_CACHE", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
                "HF_HUB_DISABLE_TELEMETRY", "NO_PROXY", "no_proxy") + (("HF_TOKEN",) if token else ()):
        monkeypatch.setenv(key, env[key])

    old_endpoint = constants.ENDPOINT
    for name, module in list(sys.modules.items()):  # modules that did `from ...constants import ENDPOINT`
        if module is None or module is constants or not name.startswith(
                ("huggingface_hub", "transformers", "datasets", "neurospec")):
            continue
        endpoint = getattr(module, "ENDPOINT", None)
        if endpoint == old_endpoint or _is_fake_endpoint(endpoint):  # or an earlier test's hub, imported under it
            monkeypatch.setattr(module, "ENDPOINT", hub.endpoint)
        # Shared HfApi instances keep the endpoint of their creation: huggingface_hub.hf_api.api, and
        # transformers.utils.hub._hf_api, made at its first use, maybe under an earlier test's (now closed) hub,
        # whose refused connections huggingface_hub retries with backoff (~23 s a call) before transformers
        # swallows the error (its tokenizer's list_repo_files).
        for attr in ("api", "_hf_api"):
            instance = getattr(module, attr, None)
            if isinstance(instance, hf_api.HfApi):
                monkeypatch.setattr(instance, "endpoint", hub.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_XET_CACHE", env["HF_XET_CACHE"], raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", env["HF_TOKEN_PATH"])
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", env["HF_STORED_TOKENS_PATH"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False, raising=False)


def _is_fake_endpoint(endpoint: Any) -> bool:
    """A FakeHub's endpoint (loopback, any port)."""
    return isinstance(endpoint, str) and endpoint.startswith("http://127.0.0.1:")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    server_version = "FakeHub/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- responses -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", formatdate(usegmt=True))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._json(status, {"error": message}, headers)

    # -- dispatch --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        self._dispatch()

    @property
    def _status(self) -> int:
        return self._rec.status

    @_status.setter
    def _status(self, value: int) -> None:  # set before the status line goes out: logged in time
        self._rec.status = value

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        raw_parts = split.path.split("/")[1:]
        parts = [unquote(p) for p in raw_parts]
        query = parse_qs(split.query)
        self._rec = Request(method=self.command, path=unquote(split.path), query=query, status=0,
                            authorization=self.headers.get("Authorization"),
                            headers=dict(self.headers.items()))
        self.hub.requests.append(self._rec)
        try:
            if parts and parts[0] == "api":
                self._api(parts[1:], query)
            elif "resolve" in parts:
                self._resolve(parts)
            else:
                self._error(404, None, "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _authorized(self, repo: Repo) -> int:
        """200, or 401 (no token) / 403 (wrong token) for a gated repo."""
        if not repo.gated:
            return 200
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return 401
        return 200 if auth == f"Bearer {self.hub.token}" else 403

    def _gated_error(self, repo: Repo, status: int) -> None:
        kind = "model" if repo.repo_type == "model" else "dataset"
        self._error(status, "GatedRepo",
                    f"Access to {kind} {repo.repo_id} is restricted. You must have access to it and be "
                    f"authenticated to access it. Please log in.")

    def _check_revision(self, repo: Repo, revision: str) -> bool:
        if revision in ("main", repo.commit):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return False

    # -- /{repo}/resolve/{revision}/{path} -------------------------------------------------------------
    def _resolve(self, parts: list[str]) -> None:
        i = parts.index("resolve")
        repo_parts, rest = parts[:i], parts[i + 1:]
        repo_type = "model"
        if repo_parts and repo_parts[0] in ("datasets", "spaces"):
            repo_type = repo_parts[0][:-1]
            repo_parts = repo_parts[1:]
        if not repo_parts or len(rest) < 2:
            return self._error(404, None, "Not Found")
        repo_id, revision, filename = "/".join(repo_parts), rest[0], "/".join(rest[1:])
        repo = self.hub.repo(repo_type, repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        status = self._authorized(repo)
        if status != 200:
            return self._gated_error(repo, status)
        if not self._check_revision(repo, revision):
            return
        path = (repo.directory / filename).resolve()
        root = repo.directory.resolve()
        if root not in path.parents or not path.is_file() or ".." in filename.split("/"):
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                               commit=repo.commit)
        self._send_file(repo, path, filename)

    def _send_file(self, repo: Repo, path: Path, filename: str) -> None:
        size = path.stat().st_size
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes", "Vary": "Origin, Accept"}
        if filename.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE:
            sha = self.hub._hash(path, "sha256")
            headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)})
        else:
            headers["ETag"] = f'"{self.hub._hash(path, "sha1")}"'
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and "," not in rng and size:
            a, _, b = rng[len("bytes="):].partition("-")
            try:
                if a:
                    start, end = int(a), (min(int(b), size - 1) if b else size - 1)
                else:
                    start, end = max(size - int(b), 0), size - 1
            except ValueError:
                start, end = 0, size - 1
            else:
                if start > end or start >= size:
                    self._status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Date", formatdate(usegmt=True))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD" or not length:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining:
                chunk = fh.read(min(1 << 20, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- /api/... ------------------------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict[str, list[str]]) -> None:
        if len(parts) < 3 or parts[0] not in ("models", "datasets"):
            return self._error(404, None, "Not Found")
        repo_type = "model" if parts[0] == "models" else "dataset"
        repo_id, rest = "/".join(parts[1:3]), parts[3:]
        repo = self.hub.repo(repo_type, repo_id)
        if repo is None and len(parts) >= 2:  # legacy single-segment id (e.g. "gpt2")
            repo = self.hub.repo(repo_type, parts[1])
            if repo is not None:
                rest = parts[2:]
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if not rest:
            return self._json(200, self._info(repo))
        if rest[0] == "revision" and len(rest) >= 2:
            if self._check_revision(repo, "/".join(rest[1:])):
                self._json(200, self._info(repo))
            return
        if rest[0] == "tree" and len(rest) >= 2:
            if not self._check_revision(repo, rest[1]):
                return
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._tree(repo, "/".join(rest[2:]), recursive)
        if rest[0] == "paths-info" and len(rest) >= 2:
            if not self._check_revision(repo, rest[1]):
                return
            return self._paths_info(repo)
        return self._error(404, None, "Not Found")

    def _entries(self, repo: Repo, base: str, recursive: bool) -> list[dict[str, Any]] | None:
        root = repo.directory.resolve()
        directory = (root / base).resolve() if base else root
        if (directory != root and root not in directory.parents) or not directory.is_dir():
            return None
        out = []
        items = sorted(directory.rglob("*") if recursive else directory.iterdir())
        for p in items:
            rel = p.relative_to(root).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts):
                continue
            out.append(self._entry(p, rel))
        return out

    def _entry(self, p: Path, rel: str) -> dict[str, Any]:
        if p.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}
        size = p.stat().st_size
        entry: dict[str, Any] = {"type": "file", "oid": self.hub._hash(p, "sha1"), "size": size, "path": rel}
        if rel.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE:
            entry["lfs"] = {"oid": self.hub._hash(p, "sha256"), "size": size, "pointerSize": 134}
        return entry

    def _tree(self, repo: Repo, base: str, recursive: bool) -> None:
        entries = self._entries(repo, base, recursive)
        if entries is None:
            return self._error(404, "EntryNotFound", f"{base} does not exist", commit=repo.commit)
        self._json(200, entries, {"X-Repo-Commit": repo.commit})

    def _paths_info(self, repo: Repo) -> None:
        body = getattr(self, "_body", b"")
        try:
            paths = json.loads(body).get("paths", []) if body.startswith(b"{") else \
                parse_qs(body.decode()).get("paths", [])
        except (ValueError, AttributeError):
            paths = []
        root = repo.directory.resolve()
        out = []
        for rel in paths:
            p = (root / rel).resolve()
            if (p == root or root in p.parents) and p.exists():
                out.append(self._entry(p, rel))
        self._json(200, out, {"X-Repo-Commit": repo.commit})

    def _info(self, repo: Repo) -> dict[str, Any]:
        files = self._entries(repo, "", recursive=True) or []
        return {
            "_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": repo.commit, "private": False, "disabled": False,
            "gated": "manual" if repo.gated else False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z", "createdAt": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": e["path"]} for e in files if e["type"] == "file"],
        }
