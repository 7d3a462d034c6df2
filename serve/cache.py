"""Content-addressed disk cache of generated inits, bounded in size with LRU eviction.

Layout under the cache folder::

    blobs/<sha256>.safetensors   an init, named by the sha256 of its bytes (the ETag)
    keys/<request key>           the sha256 of the init that request produced (64 hex chars)
    tmp/                         generations in progress; emptied at start

A request key is the hash of the canonical request (see :func:`request_key`); several keys
may share a blob. Every file appears atomically (written aside, then renamed), so a crash
never leaves a partial init under a real name. Recency is a blob's mtime, bumped on every
use, so the LRU order survives restarts (``atime`` is unreliable on ``noatime`` mounts).

The size bound and LRU order are tracked in memory, so a folder belongs to one process.
The init just written is never evicted: the cache stays within ``max_bytes`` unless one init
alone is larger.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

SUFFIX = ".safetensors"
_CHUNK = 1 << 20


def request_key(request: dict[str, Any]) -> str:
    """sha256 of a request's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class InitCache:
    """Disk cache: request key -> content hash -> safetensors file. Thread-safe."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), max_bytes
        self.blobs, self.keys, self.tmp = (self.root / d for d in ("blobs", "keys", "tmp"))
        for folder in (self.blobs, self.keys):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a killed process
        self.tmp.mkdir()
        self.evictions = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # content hash -> bytes, oldest first
        self._keys_of: dict[str, set[str]] = {}  # content hash -> request keys naming it
        self._scan()

    def _scan(self) -> None:
        blobs = sorted(self.blobs.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        for blob in blobs:
            self._add(blob.name.removesuffix(SUFFIX), blob.stat().st_size)
        for key_file in self.keys.iterdir():
            content = key_file.read_text().strip()
            if content in self._keys_of:
                self._keys_of[content].add(key_file.name)
            else:  # its blob was evicted or lost
                key_file.unlink()

    def _add(self, content: str, size: int) -> None:
        self._bytes += size - self._lru.get(content, 0)
        self._lru[content] = size
        self._lru.move_to_end(content)
        self._keys_of.setdefault(content, set())

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._lru)

    def blob_path(self, content_hash: str) -> Path:
        return self.blobs / f"{content_hash}{SUFFIX}"

    def lookup(self, key: str) -> tuple[str, BinaryIO] | None:
        """The content hash and open file of the init a request key produced, if cached."""
        try:
            content = (self.keys / key).read_text().strip()
        except FileNotFoundError:
            return None
        file = self.open(content)
        return (content, file) if file is not None else None

    def open(self, content_hash: str) -> BinaryIO | None:
        """The cached init, opened for reading and marked as just used; None if not cached.

        The open file stays readable even if the init is evicted while it is being sent.
        """
        with self._lock:
            if content_hash not in self._lru:
                return None
            self._lru.move_to_end(content_hash)
            path = self.blob_path(content_hash)
            os.utime(path)
            return open(path, "rb")

    def temp_path(self) -> Path:
        """A fresh path under ``tmp/`` for a generation to write to."""
        return self.tmp / f"{uuid.uuid4().hex}{SUFFIX}"

    def put(self, key: str, file: Path) -> str:
        """Move a finished init into the cache under ``key``; returns its content hash."""
        content = file_sha256(file)
        blob = self.blob_path(content)
        os.replace(file, blob)  # same bytes if it was there already
        fd, tmp_key = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.replace(tmp_key, self.keys / key)
        with self._lock:
            self._add(content, blob.stat().st_size)
            self._keys_of[content].add(key)
            self._evict(keep=content)
        return content

    def _evict(self, keep: str) -> None:
        """Drop least recently used inits (and their keys) until within the bound."""
        for content in list(self._lru):
            if self._bytes <= self.max_bytes:
                return
            if content == keep:
                continue
            self._bytes -= self._lru.pop(content)
            for key in self._keys_of.pop(content, ()):
                (self.keys / key).unlink(missing_ok=True)
            self.blob_path(content).unlink(missing_ok=True)
            self.evictions += 1
