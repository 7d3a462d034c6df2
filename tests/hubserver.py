"""A small Hugging Face Hub compatible HTTP server for tests, served on loopback.

Build machines have no internet, so tests of the Hub support run the *real* ``huggingface_hub``
client against this server on ``127.0.0.1``. It implements the part of the Hub HTTP API that
``huggingface_hub`` (checked against 2.4) uses to create repos, upload (regular files and plain Git
LFS, never Xet), tag, branch, list and download files:

- ``POST /api/repos/create``, ``DELETE /api/repos/delete``: ``create_repo``, ``delete_repo``
- ``GET /api/whoami-v2``; ``POST /api/validate-yaml`` (committing a README.md calls it)
- ``GET /api/{models|datasets}/{id}[/revision/{rev}]``: ``repo_info``, ``model_info``
- ``GET /api/{t}/{id}/tree/{rev}[/{path}]``: ``list_repo_tree``, ``list_repo_files``
- ``POST /api/{t}/{id}/paths-info/{rev}``: ``get_paths_info``
- ``GET /api/{t}/{id}/refs`` and ``/commits/{rev}``: ``list_repo_refs``, ``list_repo_commits``
- ``POST|DELETE /api/{t}/{id}/branch/{name}``, ``POST /api/{t}/{id}/tag/{rev}``,
  ``DELETE /api/{t}/{id}/tag/{tag}``: branches and tags
- ``POST /api/{t}/{id}/preupload/{rev}``: per file, upload "regular" (inline) or through LFS
- ``POST /[datasets/]{id}.git/info/lfs/objects/batch`` and ``.../verify``: Git LFS batch API,
  ``basic`` transfer, with ``PUT /lfs-upload/{sha256}?ticket=...`` (a "presigned" upload URL)
- ``POST /api/{t}/{id}/commit/{rev}``: the NDJSON commit
- ``GET|HEAD /[datasets/]{id}/resolve/{rev}/{path}``: ``hf_hub_download``, ``snapshot_download``

Storage is a folder: blobs are content-addressed by sha256 under ``blobs/``, and each repo is a
``repo.json`` holding its linear history of commits (each a full snapshot ``path -> blob``), its
branches and its tags. A revision is a branch, a tag, ``refs/heads/…``/``refs/tags/…`` or a full
40-hex commit sha. Errors carry the ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``) the client turns into its specific exceptions.

Deliberately left out: pull requests, private-repo read checks, gated repos, Xet, multipart LFS,
``.gitignore`` handling, cross-repo copies and canonical one-segment repo ids (``gpt2``).

Use it through the :func:`hub_server` fixture, which also points an already imported
``huggingface_hub`` at the server (see :func:`point_hf_hub_at` for why env vars alone don't).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from huggingface_hub import HfApi, close_session, constants, hf_api

logger = logging.getLogger(__name__)

REPO_TYPES = ("model", "dataset")
DEFAULT_USER = "user"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files of 10 MB or more in LFS
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.model",
        "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.parquet", "*.pickle", "*.pkl", "*.pt", "*.pth",
        "*.safetensors", "*.tar", "*.tflite", "*.tgz", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # a shortened copy of the .gitattributes the Hub puts in every new repo
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


def _now() -> str:
    """The current UTC time in the Hub's format (``2024-01-31T12:00:00.000Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file that stands in git for an LFS-stored file."""
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    return text.encode()


def is_lfs_tracked(path: str, gitattributes: str) -> bool:
    """Whether ``.gitattributes`` text routes ``path`` to LFS (``PATTERN filter=lfs ...`` lines)."""
    for line in gitattributes.splitlines():
        pattern, *attributes = line.split() or [""]
        if "filter=lfs" in attributes:
            target = path if "/" in pattern else path.rsplit("/", 1)[-1]
            if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
                return True
    return False


class HubError(Exception):
    """An HTTP error answer; ``code`` goes to ``X-Error-Code``, for the client's specific errors."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


def repo_not_found(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, f"{repo_type} repository {repo_id} not found", "RepoNotFound")


def revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


@dataclass
class FileEntry:
    """A file in a commit: its blob (sha256), its size, and whether it is stored in LFS."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git sha1 of the content, or of the LFS pointer for LFS files

    def tree_json(self, path: str) -> dict[str, Any]:
        """The entry as ``/tree`` and ``/paths-info`` list it."""
        out: dict[str, Any] = {"type": "file", "oid": self.git_oid, "size": self.size, "path": path}
        if self.lfs:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            out["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return out


@dataclass
class Commit:
    """One commit of a repo's linear history: a full snapshot of its files."""

    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    """A repo: its commits, branches and tags, saved as ``repo.json``."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Repo:
        commits = {}
        for oid, raw in data.pop("commits").items():
            files = {path: FileEntry(**entry) for path, entry in raw.pop("files").items()}
            commits[oid] = Commit(files=files, **raw)
        return cls(commits=commits, **data)

    def resolve(self, revision: str) -> Commit:
        """The commit a branch, tag, ``refs/heads/x``, ``refs/tags/x`` or commit sha names."""
        for prefix, refs in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if revision.startswith(prefix) and revision[len(prefix):] in refs:
                return self.commits[refs[revision[len(prefix):]]]
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and _COMMIT_SHA.fullmatch(revision) and revision in self.commits:
            oid = revision
        if oid is None:
            raise revision_not_found(revision)
        return self.commits[oid]

    def branch_name(self, revision: str) -> str:
        """``revision`` as a branch name; commits can only go to (existing) branches."""
        name = revision.removeprefix("refs/heads/")
        if name not in self.branches:
            if name in self.tags or revision in self.commits:
                raise HubError(400, f"Cannot commit to {revision}: not a branch")
            raise revision_not_found(revision)
        return name

    def add_commit(self, parent: str | None, files: dict[str, FileEntry], title: str,
                   message: str) -> Commit:
        """Record a new commit (its sha is random, like a git sha is unpredictable)."""
        oid = hashlib.sha1(secrets.token_bytes(20)).hexdigest()
        commit = Commit(oid, parent, title, message, _now(), files)
        self.commits[oid] = commit
        return commit

    def history(self, start: Commit) -> Iterator[Commit]:
        """``start`` and its ancestors, newest first."""
        commit: Commit | None = start
        while commit is not None:
            yield commit
            commit = self.commits[commit.parent] if commit.parent else None


class HubStore:
    """Repos and blobs on disk under ``root``; one lock serializes repo reads and writes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        for path in sorted(self.root.glob("repos/*/*/*/repo.json")):  # reopen an existing store
            repo = Repo.from_json(json.loads(path.read_text()))
            self.repos[repo.repo_type, repo.repo_id] = repo

    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / repo_id

    def save(self, repo: Repo) -> None:
        """Write ``repo.json`` atomically."""
        path = self._repo_dir(repo.repo_type, repo.repo_id) / "repo.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(asdict(repo)))
        os.replace(tmp, path)

    def get(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise repo_not_found(repo_type, repo_id)
        return repo

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        """A new repo whose ``main`` holds one commit with the default ``.gitattributes``."""
        repo = Repo(repo_type, repo_id, private, _now())
        files = {".gitattributes": self.regular_entry(DEFAULT_GITATTRIBUTES.encode())}
        repo.branches["main"] = repo.add_commit(None, files, "initial commit", "").oid
        self.repos[repo_type, repo_id] = repo
        self.save(repo)
        return repo

    def delete(self, repo_type: str, repo_id: str) -> None:
        self.get(repo_type, repo_id)
        del self.repos[repo_type, repo_id]
        shutil.rmtree(self._repo_dir(repo_type, repo_id), ignore_errors=True)

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their sha256 (atomic, idempotent) and return it."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def regular_entry(self, data: bytes) -> FileEntry:
        return FileEntry(self.put_blob(data), len(data), False, git_blob_sha1(data))

    def lfs_entry(self, sha256: str) -> FileEntry:
        size = self.blob_path(sha256).stat().st_size
        return FileEntry(sha256, size, True, git_blob_sha1(lfs_pointer(sha256, size)))


@dataclass
class Request:
    """What a route handler sees of an HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"invalid JSON body: {err}") from err

    def flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[-1].lower() in ("1", "true")


@dataclass
class Response:
    """What a route handler returns; HEAD answers drop the body but keep its length."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, content_type: str = "application/json") -> Response:
        return cls(status, json.dumps(data).encode(), {"Content-Type": content_type})


Handler = Callable[..., Response]
_TYPE = r"/api/(?P<types>models|datasets)/(?P<repo_id>[^/]+/[^/]+)"
_GIT = r"/(?:(?P<types>datasets)/)?(?P<repo_id>[^/]+/[^/]+)"


class HubApp:
    """The Hub API on top of a :class:`HubStore`, independent of the HTTP plumbing.

    ``token``: when set, write endpoints require ``Authorization: Bearer <token>`` (401 otherwise).
    It can be changed while the server runs.
    """

    def __init__(self, store: HubStore, base_url: str, token: str | None = None) -> None:
        self.store = store
        self.base_url = base_url
        self.token = token
        self.errors: list[str] = []  # unexpected exceptions (answered with 500)
        self._tickets: dict[str, str] = {}  # LFS upload ticket -> sha256 it may upload
        # (method, path regex, handler, needs write auth); groups are URL-unquoted before the call
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = [
            (method, re.compile(pattern), handler, write)
            for method, pattern, handler, write in [
                ("POST", r"/api/repos/create", self.create_repo, True),
                ("DELETE", r"/api/repos/delete", self.delete_repo, True),
                ("GET", r"/api/whoami-v2", self.whoami, True),
                ("POST", r"/api/validate-yaml", self.validate_yaml, False),
                ("GET", r"/api/agent-harnesses", self.agent_harnesses, False),
                ("GET", rf"{_TYPE}(?:/revision/(?P<rev>[^/]+))?", self.repo_info, False),
                ("GET", rf"{_TYPE}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self.tree, False),
                ("POST", rf"{_TYPE}/paths-info/(?P<rev>[^/]+)", self.paths_info, False),
                ("GET", rf"{_TYPE}/refs", self.refs, False),
                ("GET", rf"{_TYPE}/commits/(?P<rev>[^/]+)", self.commits, False),
                ("POST", rf"{_TYPE}/branch/(?P<branch>[^/]+)", self.create_branch, True),
                ("DELETE", rf"{_TYPE}/branch/(?P<branch>[^/]+)", self.delete_branch, True),
                ("POST", rf"{_TYPE}/tag/(?P<rev>[^/]+)", self.create_tag, True),
                ("DELETE", rf"{_TYPE}/tag/(?P<tag>[^/]+)", self.delete_tag, True),
                ("POST", rf"{_TYPE}/preupload/(?P<rev>[^/]+)", self.preupload, True),
                ("POST", rf"{_TYPE}/commit/(?P<rev>[^/]+)", self.commit, True),
                ("POST", rf"{_GIT}\.git/info/lfs/objects/batch", self.lfs_batch, True),
                ("POST", rf"{_GIT}\.git/info/lfs/objects/verify", self.lfs_verify, True),
                ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload, False),
                ("GET", rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve, False),
                ("HEAD", rf"{_GIT}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve, False),
            ]
        ]

    # --- plumbing -------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Route a request; errors become Hub-style answers (``X-Error-Code``/``-Message``)."""
        try:
            for method, pattern, handler, write in self.routes:
                match = pattern.fullmatch(request.path)
                if method == request.method and match:
                    if write:
                        self._check_token(request)
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if "types" in params:
                        params["repo_type"] = params.pop("types").removesuffix("s")
                    return handler(request, **params)
            raise HubError(404, f"{request.method} {request.path} is not implemented here")
        except HubError as err:
            response = Response.json({"error": err.message}, err.status)
            response.headers.update(err.headers)
            response.headers["X-Error-Message"] = err.message
            if err.code:
                response.headers["X-Error-Code"] = err.code
            return response
        except Exception:  # a bug here: answer 500 and keep it for the fixture to report
            self.errors.append(traceback.format_exc())
            logger.exception("hub server error on %s %s", request.method, request.path)
            return Response.json({"error": "internal server error"}, 500)

    def _check_token(self, request: Request) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise HubError(401, "Invalid credentials in Authorization header")

    def repo_url(self, repo: Repo) -> str:
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        return f"{self.base_url}/{prefix}{repo.repo_id}"

    # --- repos ----------------------------------------------------------------------------------

    def create_repo(self, request: Request) -> Response:
        body = request.json()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"repo type {repo_type!r} is not supported by this server")
        namespace, name = body.get("organization") or DEFAULT_USER, body.get("name") or ""
        if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(name)) or "--" in name:
            raise HubError(400, f"invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        with self.store.lock:
            existing = self.store.repos.get((repo_type, repo_id))
            if existing is not None:
                data = {"error": f"You already created this {repo_type} repo",
                        "url": self.repo_url(existing)}
                return Response.json(data, 409)
            private = bool(body.get("private")) or body.get("visibility") == "private"
            repo = self.store.create(repo_type, repo_id, private)
        return Response.json({"url": self.repo_url(repo), "name": repo_id, "id": repo_id})

    def delete_repo(self, request: Request) -> Response:
        body = request.json()
        repo_id = f"{body.get('organization') or DEFAULT_USER}/{body.get('name')}"
        with self.store.lock:
            self.store.delete(body.get("type") or "model", repo_id)
        return Response()

    def whoami(self, request: Request) -> Response:
        return Response.json({"type": "user", "name": DEFAULT_USER, "fullname": DEFAULT_USER,
                              "orgs": [], "auth": {"type": "access_token"}})

    def validate_yaml(self, request: Request) -> Response:
        return Response.json({"errors": [], "warnings": []})  # any README.md metadata is fine

    def agent_harnesses(self, request: Request) -> Response:
        return Response.json({"standardEnvVars": [], "harnesses": {}})

    def repo_info(self, request: Request, repo_type: str, repo_id: str,
                  rev: str = "main") -> Response:
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            commit = repo.resolve(rev)
        with_blobs = request.flag("blobs")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry.size, blobId=entry.git_oid)
                if entry.lfs:
                    lfs = entry.tree_json(path)["lfs"]
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                                      "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        return Response.json({
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings,
        })

    # --- listing --------------------------------------------------------------------------------

    def tree(self, request: Request, repo_type: str, repo_id: str, rev: str,
             path: str = "") -> Response:
        with self.store.lock:
            commit = self.store.get(repo_type, repo_id).resolve(rev)
        prefix = path.strip("/")
        recursive = request.flag("recursive")
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for file_path, entry in sorted(commit.files.items()):
            if prefix and not file_path.startswith(prefix + "/"):
                continue
            parts = file_path[len(prefix) + 1 if prefix else 0:].split("/")
            top = f"{prefix}/{parts[0]}" if prefix else parts[0]
            if len(parts) == 1:
                entries.append(entry.tree_json(file_path))
            elif recursive:
                entries.append(entry.tree_json(file_path))
                folders.update(file_path.rsplit("/", i)[0] for i in range(1, len(parts)))
            else:
                folders.add(top)
        if prefix and not entries and not folders:
            raise HubError(404, f"{prefix} does not exist at {commit.oid}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        entries += [self._folder_json(commit, folder) for folder in sorted(folders)]
        return Response.json(entries)

    @staticmethod
    def _folder_json(commit: Commit, folder: str) -> dict[str, Any]:
        oid = hashlib.sha1(f"{commit.oid}:{folder}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": folder}

    def paths_info(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        form = parse_qs(request.body.decode())
        with self.store.lock:
            commit = self.store.get(repo_type, repo_id).resolve(rev)
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(commit.files[path].tree_json(path))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(self._folder_json(commit, path))
        return Response.json(out)

    def refs(self, request: Request, repo_type: str, repo_id: str) -> Response:
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            data = {
                kind: [{"name": name, "ref": f"refs/{git_dir}/{name}", "targetCommit": oid}
                       for name, oid in sorted(refs.items())]
                for kind, git_dir, refs in (("branches", "heads", repo.branches),
                                            ("tags", "tags", repo.tags))
            }
        return Response.json({**data, "converts": [], "pullRequests": []})

    def commits(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            history = list(repo.history(repo.resolve(rev)))
        return Response.json([
            {"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
             "authors": [{"user": DEFAULT_USER, "avatar": None}]}
            for c in history
        ])

    # --- refs -----------------------------------------------------------------------------------

    def create_branch(self, request: Request, repo_type: str, repo_id: str,
                      branch: str) -> Response:
        start = request.json().get("startingPoint") or "main"
        if not _NAME.fullmatch(branch):
            raise HubError(400, f"invalid branch name: {branch}")
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = repo.resolve(start).oid
            self.store.save(repo)
        return Response()

    def delete_branch(self, request: Request, repo_type: str, repo_id: str,
                      branch: str) -> Response:
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            if branch not in repo.branches:
                raise revision_not_found(branch)
            if branch == "main":
                raise HubError(400, "Cannot delete the default branch")
            del repo.branches[branch]
            self.store.save(repo)
        return Response()

    def create_tag(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        tag = str(request.json().get("tag") or "")
        if not _NAME.fullmatch(tag):
            raise HubError(400, f"invalid tag name: {tag!r}")
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            if tag in repo.tags:
                raise HubError(409, f"Reference already exists: refs/tags/{tag}")
            repo.tags[tag] = repo.resolve(rev).oid
            self.store.save(repo)
        return Response()

    def delete_tag(self, request: Request, repo_type: str, repo_id: str, tag: str) -> Response:
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            if repo.tags.pop(tag, None) is None:
                raise revision_not_found(tag)
            self.store.save(repo)
        return Response()

    # --- uploads --------------------------------------------------------------------------------

    def preupload(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        """Tell the client, per file, whether to send it inline ("regular") or through LFS.

        Like the Hub: LFS if ``.gitattributes`` tracks it, if it is 10 MB or more, or if it looks
        binary (a NUL byte in its first 512 bytes). ``oid`` is the current remote file's id in
        the form the client compares with (git sha1, or sha256 for LFS) to skip unchanged files.
        """
        if request.flag("create_pr"):
            raise HubError(400, "pull requests are not supported by this server")
        with self.store.lock:
            commit = self.store.get(repo_type, repo_id).resolve(rev)
        attributes_entry = commit.files.get(".gitattributes")
        attributes = (self.store.blob_path(attributes_entry.sha256).read_text()
                      if attributes_entry else "")
        files = []
        for item in request.json().get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = size >= LFS_SIZE_THRESHOLD or b"\0" in sample or is_lfs_tracked(path, attributes)
            remote = commit.files.get(path)
            oid = None if remote is None else remote.sha256 if remote.lfs else remote.git_oid
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        return Response.json({"files": files, "commitOid": commit.oid})

    def lfs_batch(self, request: Request, repo_id: str, repo_type: str = "model") -> Response:
        """Git LFS batch API, upload side, ``basic`` transfer only (no multipart, no Xet).

        Objects already stored get no ``actions``; the others get an upload URL carrying a
        one-time ticket (the client PUTs without auth, as to a presigned S3 URL) and a verify URL.
        """
        body = request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "only the LFS 'upload' operation is supported")
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
        verify_url = f"{self.repo_url(repo)}.git/info/lfs/objects/verify"
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and _SHA256.fullmatch(oid) and isinstance(size, int)):
                objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                 "error": {"code": 422, "message": "invalid oid or size"}})
            elif self.store.blob_path(oid).exists():
                objects.append({"oid": oid, "size": size})
            else:
                ticket = secrets.token_urlsafe(16)
                self._tickets[ticket] = oid
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{self.base_url}/lfs-upload/{oid}?ticket={ticket}"},
                    "verify": {"href": verify_url, "header": {}},
                }})
        data = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return Response.json(data, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, request: Request, oid: str) -> Response:
        ticket = request.query.get("ticket", [""])[-1]
        if self._tickets.get(ticket) != oid:
            raise HubError(403, "missing or invalid upload ticket")
        if hashlib.sha256(request.body).hexdigest() != oid:
            raise HubError(400, "uploaded bytes do not match the sha256 announced")
        self.store.put_blob(request.body)
        self._tickets.pop(ticket, None)
        return Response(headers={"ETag": f'"{oid}"'})

    def lfs_verify(self, request: Request, repo_id: str, repo_type: str = "model") -> Response:
        body = request.json()
        oid, size = str(body.get("oid")), body.get("size")
        with self.store.lock:
            self.store.get(repo_type, repo_id)
        path = self.store.blob_path(oid)
        if not (_SHA256.fullmatch(oid) and path.exists() and path.stat().st_size == size):
            raise HubError(404, f"LFS object {oid} of size {size} was not uploaded")
        return Response.json({"message": "ok"}, content_type="application/vnd.git-lfs+json")

    def commit(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        """Apply an NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder lines)."""
        if request.flag("create_pr"):
            raise HubError(400, "pull requests are not supported by this server")
        try:
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"invalid NDJSON body: {err}") from err
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        with self.store.lock:
            repo = self.store.get(repo_type, repo_id)
            branch = repo.branch_name(rev)
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, f"parent commit {parent} is not the head of {branch}")
            files = dict(head.files)
            for line in lines[1:]:
                self._apply(files, line.get("key"), line.get("value") or {}, head)
            commit = repo.add_commit(head.oid, files, header.get("summary") or "",
                                     header.get("description") or "")
            repo.branches[branch] = commit.oid
            self.store.save(repo)
        return Response.json({"success": True, "commitOid": commit.oid, "hookOutput": "",
                              "commitUrl": f"{self.repo_url(repo)}/commit/{commit.oid}",
                              "pullRequestUrl": None})

    def _apply(self, files: dict[str, FileEntry], key: str | None, value: dict[str, Any],
               head: Commit) -> None:
        """Apply one commit operation to the snapshot ``files``."""
        path = str(value.get("path", "")).strip("/")
        if not path or ".." in path.split("/"):
            raise HubError(400, f"invalid path in commit: {value.get('path')!r}")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
            files[path] = self.store.regular_entry(base64.b64decode(value.get("content", "")))
        elif key == "lfsFile":
            oid = str(value.get("oid"))
            if value.get("algo", "sha256") != "sha256" or not _SHA256.fullmatch(oid):
                raise HubError(400, f"invalid LFS oid for {path}")
            if not self.store.blob_path(oid).exists():
                raise HubError(400, f"LFS object {oid} for {path} was never uploaded")
            files[path] = self.store.lfs_entry(oid)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}",
                               "EntryNotFound", {"X-Repo-Commit": head.oid})
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(path + "/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}",
                               "EntryNotFound", {"X-Repo-Commit": head.oid})
            for p in inside:
                del files[p]
        else:
            raise HubError(400, f"unknown commit operation {key!r}")

    # --- downloads ------------------------------------------------------------------------------

    def resolve(self, request: Request, repo_id: str, rev: str, path: str,
                repo_type: str = "model") -> Response:
        """Serve a file with the headers ``hf_hub_download`` needs.

        ``ETag`` is the git sha1 for regular files and the sha256 for LFS files (with
        ``X-Linked-Etag``/``X-Linked-Size`` as the Hub sends them); ``X-Repo-Commit`` is the
        resolved commit. The bytes are served directly (the Hub redirects LFS to a CDN instead).
        A single ``Range: bytes=a-b`` is honored so interrupted downloads can resume.
        """
        with self.store.lock:
            commit = self.store.get(repo_type, repo_id).resolve(rev)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"{path} does not exist at {commit.oid}", "EntryNotFound",
                           {"X-Repo-Commit": commit.oid})
        etag = entry.sha256 if entry.lfs else entry.git_oid
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}";'}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        data = self.store.blob_path(entry.sha256).read_bytes()
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", request.headers.get("range", "").strip())
        if match and any(match.groups()):
            start_text, end_text = match.groups()
            if start_text:
                start, end = int(start_text), int(end_text) if end_text else len(data) - 1
            else:  # suffix range: the last N bytes
                start, end = max(len(data) - int(end_text), 0), len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data) or start > end:
                headers["Content-Range"] = f"bytes */{len(data)}"
                return Response(416, b"", headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return Response(206, data[start:end + 1], headers)
        return Response(200, data, headers)


class _RequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing: read the whole body, let :class:`HubApp` answer, write the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 30  # idle keep-alive connections end on their own
    server: _HTTPServer

    def _serve(self) -> None:
        body = self._read_body()
        url = urlsplit(self.path)
        request = Request(self.command, url.path, parse_qs(url.query),
                          {k.lower(): v for k, v in self.headers.items()}, body)
        response = self.server.app.handle(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def _read_body(self) -> bytes:
        """The request body, plain or chunked: always read whole, so keep-alive stays in sync."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("hub server: " + format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: HubApp


class HubServer:
    """A Hub-compatible server on ``127.0.0.1`` (free port by default), in a background thread.

    Use as a context manager, or ``start()``/``stop()``. ``url`` is the endpoint to give the
    client; ``token`` (settable while running) makes write endpoints require that bearer token.
    """

    def __init__(self, root: Path, token: str | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), _RequestHandler)
        self.url = f"http://{host}:{self._httpd.server_address[1]}"
        self.app = self._httpd.app = HubApp(HubStore(root), self.url, token)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"hub-server-{self.url}")

    @property
    def token(self) -> str | None:
        return self.app.token

    @token.setter
    def token(self, value: str | None) -> None:
        self.app.token = value

    @property
    def store(self) -> HubStore:
        return self.app.store

    @property
    def errors(self) -> list[str]:
        """Tracebacks of unexpected server exceptions (each answered with HTTP 500)."""
        return self.app.errors

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- pointing huggingface_hub at the server ------------------------------------------------------


def point_hf_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Point ``huggingface_hub`` at ``endpoint``, with Xet and telemetry off and its own cache.

    ``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``,
    ``HF_HUB_DISABLE_XET`` and ``HF_HUB_OFFLINE`` once, at import, into
    ``huggingface_hub.constants``, and builds the module-level ``HfApi`` (behind
    ``huggingface_hub.upload_file``, ``create_repo``, ...) with the endpoint of that moment. So in
    a pytest process where it may already be imported, setting env vars is not enough: the
    constants and that ``HfApi`` are patched too (and the env vars set for subprocesses).
    ``HfApi()``, ``hf_hub_download`` and ``snapshot_download`` read the constants at call time.
    Xet must be off so uploads take the plain LFS path this server implements.
    """
    hub_cache = hf_home / "hub"
    hub_cache.mkdir(parents=True, exist_ok=True)
    env = {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hub_cache),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy"):  # loopback must never go through a proxy
        monkeypatch.setenv(name, ",".join(filter(None, [os.environ.get(name), "127.0.0.1"])))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HUGGINGFACE_HUB_CACHE", "HF_OIDC_RESOURCE", "HUGGINGFACE_CO_STAGING"):
        monkeypatch.delenv(name, raising=False)
    patches: dict[str, Any] = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,  # no agent-registry look-up when building user agents
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),  # so no real login token is picked up
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
    }
    for name, value in patches.items():
        if hasattr(constants, name):  # names differ a little between huggingface_hub versions
            monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    close_session()  # the shared HTTP client is rebuilt, reading the proxy settings above
    with suppress(ImportError):
        from huggingface_hub.utils import _cache_manager  # holds its own copy of HF_HUB_CACHE

        monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(hub_cache))


@dataclass
class LocalHub:
    """What the :func:`hub_server` fixture yields."""

    server: HubServer
    api: HfApi  # bound to ``url``
    hf_home: Path
    cache_dir: Path  # the HF_HUB_CACHE the client uses
    _monkeypatch: pytest.MonkeyPatch

    @property
    def url(self) -> str:
        return self.server.url

    def set_offline(self, offline: bool = True) -> None:
        """Switch the client's ``HF_HUB_OFFLINE`` mode (env var and the constant read from it)."""
        self._monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        self._monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")


@pytest.fixture
def hub_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A fresh Hub server on loopback, with ``huggingface_hub`` pointed at it for this test.

    Yields a :class:`LocalHub` (``.url``, ``.api``, ``.cache_dir``, ``.server``,
    ``.set_offline()``). Everything is undone at teardown, which also fails the test if the
    server hit an unexpected error (those are answered with 500, which the client may retry or
    hide by falling back to its cache).
    """
    with HubServer(tmp_path / "hub-server") as server:
        hf_home = tmp_path / "hf-home"
        point_hf_hub_at(monkeypatch, server.url, hf_home)
        yield LocalHub(server, HfApi(endpoint=server.url), hf_home, hf_home / "hub", monkeypatch)
        close_session()  # drop pooled keep-alive connections to this server
    assert not server.errors, "hub server errors:\n" + "\n".join(server.errors)
