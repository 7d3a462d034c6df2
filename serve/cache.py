"""Content-addressed disk cache of generated inits, bounded in size with LRU eviction.

Layout under the cache folder::

    blobs/<sha256>.safetensors   an init, named by the sha256 of its bytes (the ETag)
    keys/<request key>           the sha256 of the init that request produced (64 hex chars)
    tmp/                         generations in progress; emptied at start

A request key is the hash of the canonical request (see :func:`request_key`); several keys
may share a blob. Every file appears atomically (written aside, then renamed), so a crash
never leaves a partial init under a real name. Recency is a blob's mtime, bumped on every
use that changes the order (the newest blob is not touched again), so the LRU order
survives restarts (``atime`` is unreliable on ``noatime`` mounts).

Integrity: a blob is served only after it was checked to be what its name says: the sha256
of all its bytes equals its name, and it starts with a readable safetensors header. The
full check runs whenever the open file's inode, size, mtime or ctime differ from those of
its last passed check, and a check only counts as such when it ran at least ``SETTLED_S``
after the file's ctime (as git treats "racy" index entries): any write after it moves the
ctime by more than the clock's granularity, so a changed file is always hashed again, while
a blob served again and again is hashed once. What is sent is the file that was checked
(the open file), so a blob replaced or deleted meanwhile cannot change the answer. A blob
found missing or damaged (changed, truncated, emptied) is dropped with the keys that name
it and counted in :attr:`InitCache.damaged`; the request is then generated again. The scan
at start checks every blob in full.

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
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from hyperinit.errors import OutputPathError

SUFFIX = ".safetensors"
_CHUNK = 1 << 20
SETTLED_S = 1.0  # a check counts once it ran this long after the file's last change


def request_key(request: dict[str, Any]) -> str:
    """sha256 of a request's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (an init's name in the cache)."""
    with open(path, "rb") as f:
        return _sha256(f)


def _sha256(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _metadata(file: BinaryIO) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header; ValueError if there is none."""
    length = int.from_bytes(file.read(8), "little")
    header = json.loads(file.read(length))
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise ValueError("not a safetensors header")
    return metadata


Stamp = tuple[int, int, int, int]  # inode, size, mtime and ctime (ns) of a checked file


def _stamp(file: BinaryIO) -> Stamp:
    st = os.fstat(file.fileno())
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class CachedInit:
    """A cached init checked to be what its hash names, open for sending."""

    content_hash: str
    file: BinaryIO
    size: int
    metadata: dict[str, str]
    stamp: Stamp  # of the file when its check began
    checked_ns: int  # when the check began (time.time_ns)
    hashed: bool  # whether the check read and hashed every byte


def verified(path: Path, content_hash: str, settled: Stamp | None = None,
             ) -> CachedInit | None:
    """``path`` opened and checked to be the init ``content_hash`` names (the sha256 of its
    bytes, and a safetensors header); None if it is missing or damaged. If the open file
    still has the ``settled`` stamp of a passed check, its bytes are not hashed again."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (returned open: the caller sends and closes it)
    except OSError:  # missing, or not a readable file
        return None
    try:
        checked_ns, stamp = time.time_ns(), _stamp(file)
        hashed = stamp != settled
        if hashed and _sha256(file) != content_hash:
            raise ValueError("the bytes do not match their hash")
        file.seek(0)
        metadata = _metadata(file)
        file.seek(0)
    except (OSError, ValueError):  # unreadable, changed, or no header (a bad file, any byte)
        file.close()
        return None
    return CachedInit(content_hash, file, stamp[1], metadata, stamp, checked_ns, hashed)


class InitCache:
    """Disk cache: request key -> content hash -> safetensors file. Thread-safe."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), max_bytes
        self.blobs, self.keys, self.tmp = (self.root / d for d in ("blobs", "keys", "tmp"))
        try:
            for folder in (self.blobs, self.keys):
                folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.tmp, ignore_errors=True)  # leftovers of a killed process
            self.tmp.mkdir()
            with tempfile.TemporaryFile(dir=self.tmp):  # a real probe, as root too
                pass
        except OSError as err:
            raise OutputPathError(f"cache folder {self.root} is not writable "
                                  f"({err.strerror}): give a writable folder as the cache "
                                  "(--cache-dir)") from err
        self.evictions = 0
        self.damaged = 0  # blobs found missing or damaged, and dropped
        self.hashed = 0  # opens that hashed the whole blob (the others found it settled)
        self._bytes = 0
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # content hash -> bytes, oldest first
        self._keys_of: dict[str, set[str]] = {}  # content hash -> request keys naming it
        self._settled: dict[str, Stamp] = {}  # content hash -> stamp of a settled check
        self._newest: str | None = None  # the blob with the newest mtime
        self._scan()

    def _scan(self) -> None:
        """Take in every blob that checks out (oldest first) and the keys that name one."""
        blobs = sorted((p for p in self.blobs.glob(f"*{SUFFIX}") if p.is_file()),
                       key=lambda p: p.stat().st_mtime)
        for blob in blobs:
            content = blob.name.removesuffix(SUFFIX)
            found = verified(blob, content)
            if found is None:
                blob.unlink()
                self.damaged += 1
                continue
            self._settle(content, found)
            found.file.close()
            self._add(content, found.size)
            self._newest = content
        for key_file in self.keys.iterdir():
            try:
                content = key_file.read_text().strip()
            except (OSError, ValueError):
                content = None
            if content in self._keys_of:
                self._keys_of[content].add(key_file.name)
            else:  # its blob was evicted, lost or damaged, or the key file is
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

    def lookup(self, key: str) -> CachedInit | None:
        """The checked, open init a request key produced, if cached and intact."""
        try:
            content = (self.keys / key).read_text().strip()
        except (OSError, ValueError):
            return None
        return self.open(content)

    def open(self, content_hash: str) -> CachedInit | None:
        """The cached init, checked (:func:`verified`), open for reading and marked as just
        used; None if not cached, or if it was missing or damaged (then it is dropped).

        The open file stays readable even if the init is evicted while it is being sent.
        """
        with self._lock:
            if content_hash not in self._lru:
                return None
            self._lru.move_to_end(content_hash)
            settled = self._settled.get(content_hash)
            bump, self._newest = self._newest != content_hash, content_hash
        found = verified(self.blob_path(content_hash), content_hash, settled)
        if found is None:
            self._drop_damaged(content_hash)
            return None
        with self._lock:
            self.hashed += found.hashed
        if bump:
            os.utime(found.file.fileno())  # the file that was checked, even if evicted since
        self._settle(content_hash, found)
        return found

    def _settle(self, content_hash: str, found: CachedInit) -> None:
        """Remember the stamp of a passed check if the file had settled before the check
        began and did not change since, so the next open need not hash it again (see the
        module's "Integrity")."""
        stamp = _stamp(found.file)
        if stamp == found.stamp and found.checked_ns - stamp[3] >= SETTLED_S * 1e9:
            with self._lock:
                self._settled[content_hash] = stamp

    def _drop_damaged(self, content_hash: str) -> None:
        """Forget a blob that failed its check, unless a good copy replaced it meanwhile."""
        with self._lock:
            again = verified(self.blob_path(content_hash), content_hash)
            if again is not None:
                again.file.close()
                return
            if content_hash not in self._lru:  # evicted or dropped by another thread
                return
            self._forget(content_hash)
            self.damaged += 1

    def _forget(self, content: str) -> None:
        """Remove an init and the keys naming it (the lock is held)."""
        self._bytes -= self._lru.pop(content)
        self._settled.pop(content, None)
        for key in self._keys_of.pop(content, ()):
            (self.keys / key).unlink(missing_ok=True)
        self.blob_path(content).unlink(missing_ok=True)

    def temp_path(self) -> Path:
        """A fresh path under ``tmp/`` for a generation to write to."""
        return self.tmp / f"{uuid.uuid4().hex}{SUFFIX}"

    def put(self, key: str, file: Path) -> str:
        """Move a finished init into the cache under ``key``; returns its content hash."""
        content = file_sha256(file)
        blob = self.blob_path(content)
        fd, tmp_key = tempfile.mkstemp(dir=self.tmp)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        with self._lock:
            os.replace(file, blob)  # same bytes if it was there already, or a damaged copy
            os.replace(tmp_key, self.keys / key)
            self._add(content, blob.stat().st_size)
            self._settled.pop(content, None)  # a new file under that name
            self._newest = content
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
            self._forget(content)
            self.evictions += 1
