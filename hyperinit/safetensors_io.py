"""Streaming safetensors writer: tensors are written one by one as they are produced.

``safetensors.torch.save_file`` needs every tensor in memory at once; a predicted init of a
774M-parameter model would then need 3 GB. The format is simple enough to stream: an
8-byte little-endian header length, a JSON header with every tensor's dtype, shape and byte
range, then the raw bytes in that order. Knowing all shapes up front, we write the header
first and each tensor as it comes. Files appear atomically (temp file, then rename), and
large outputs are sharded exactly like ``huggingface_hub.save_torch_state_dict``:
``model-00001-of-00003.safetensors`` plus ``model.safetensors.index.json``. A folder output
is built aside and replaces the folder whole, so no shard or index of an earlier init stays
beside a new one; a folder holding anything but an init is refused (:func:`check_target`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import DiskFullError, OutputPathError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = 5 * 1024**3
INIT_FILE = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json")
_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorInfo:
    """What the header needs to know about a tensor before its bytes exist."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def check_writable(folder: Path) -> None:
    """Fail early, before any work, if ``folder`` is missing or read-only."""
    if not folder.is_dir():
        raise OutputPathError(f"output folder {folder} does not exist: create it first")
    try:  # a real probe: permission bits say nothing to root or on read-only mounts
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputPathError(f"output folder {folder} is not writable: {err.strerror}") from err


def check_target(target: Path) -> None:
    """Fail early, before any work, unless ``target`` can take an init: a ``.safetensors``
    path that is not a folder, or a folder path that is new, empty, or holds only an
    earlier init's files (which it then replaces); its parent must be a writable folder."""
    if target.suffix == ".safetensors":
        if target.is_dir():
            raise OutputPathError(f"{target} is a folder, and a path ending in .safetensors is "
                                  "written as one file: remove the folder or choose another "
                                  "path")
    elif target.exists():
        if not target.is_dir():
            raise OutputPathError(f"{target} is a file, and a path not ending in .safetensors "
                                  "is a folder (for model.safetensors or shards): add "
                                  ".safetensors or choose another path")
        others = sorted(p.name for p in target.iterdir() if not INIT_FILE.fullmatch(p.name))
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise OutputPathError(f"{target} holds files that are not an init's ({shown}), and "
                                  "an init replaces its folder whole: choose a new or empty "
                                  "folder, or one holding only an earlier init")
        if Path.cwd().resolve().is_relative_to(target.resolve()):
            raise OutputPathError(f"{target} is the working directory (or holds it), which an "
                                  "init would replace: write into a folder inside it")
    check_writable(target.parent)


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask is process-wide, not thread-safe


def usual_permissions(path: Path) -> None:
    """Give a file the permissions of any new file (0666 less the umask): mkstemp and
    ``safetensors`` create theirs private to their owner (0600)."""
    os.chmod(path, 0o666 & ~_UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path beside ``path`` that replaces it on success and vanishes on failure.

    The file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.
    """
    check_writable(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        usual_permissions(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _header(infos: list[TensorInfo], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for info in infos:
        header[info.name] = {"dtype": _DTYPES[info.dtype], "shape": list(info.shape),
                             "data_offsets": [offset, offset + info.nbytes]}
        offset += info.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as safetensors does
    return len(blob).to_bytes(8, "little") + blob


@contextmanager
def background_writer(f: BinaryIO, depth: int = 2) -> Iterator[Callable[[Any], None]]:
    """A ``write(buffer)`` that hands buffers to a thread writing them to ``f`` in order, so
    the next tensor is computed while the last one is copied to the file (the system call
    releases the GIL). At most ``depth`` buffers wait, which bounds memory; a failed write
    is raised by the next ``write`` or on exit, after which nothing more is written."""
    pending: queue.Queue = queue.Queue(maxsize=depth)
    failures: list[BaseException] = []

    def drain() -> None:
        while (buffer := pending.get()) is not None:
            if not failures:
                try:
                    f.write(buffer)
                except BaseException as err:  # handed to the caller's thread
                    failures.append(err)

    def write(buffer: Any) -> None:
        if failures:
            raise failures[0]
        pending.put(buffer)

    thread = threading.Thread(target=drain, name="safetensors-writer", daemon=True)
    thread.start()
    try:
        yield write
    except BaseException as err:
        failures.append(err)  # what waits is not written: the file will be removed
        raise
    finally:
        pending.put(None)
        thread.join()
    if failures:
        raise failures[0]


def write_file(path: Path, infos: list[TensorInfo], tensors: Iterator[tuple[str, torch.Tensor]],
               metadata: dict[str, str]) -> None:
    """Write one safetensors file, consuming ``tensors`` in the order of ``infos``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f, background_writer(f) as write:
        write(_header(infos, metadata))
        for info in infos:
            name, tensor = next(tensors)
            if name != info.name or tuple(tensor.shape) != info.shape:
                raise RuntimeError(f"expected {info.name} {info.shape}, got {name} "
                                   f"{tuple(tensor.shape)}")
            data = tensor.detach().to(device="cpu", dtype=info.dtype).contiguous()
            write(data.reshape(-1).view(torch.uint8).numpy())


def read_state(files: Iterable[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Every tensor of an init's files (one file, or all shards), tied aliases restored.

    A tied tensor is written once; its other names are metadata entries ``alias -> name``
    (``hyperinit.predict.tied_aliases``, as ``huggingface_hub`` writes shared tensors), and
    here each alias is the very tensor of its name, so ``load_state_dict`` fills every key.
    With plain ``safetensors``, ``safetensors.torch.load_model(model, file)`` does the same
    for a model whose parameters are tied.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    for file in files:
        with safe_open(file, "pt") as f:
            metadata.update(f.metadata() or {})
        state.update(load_file(file))
    for alias, name in metadata.items():
        if alias not in state and name in state:
            state[alias] = state[name]
    return state


def shard_plan(infos: list[TensorInfo], max_shard_size: int) -> list[list[TensorInfo]]:
    """Greedy split in order; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[TensorInfo]] = [[]]
    size = 0
    for info in infos:
        if shards[-1] and size + info.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(info)
        size += info.nbytes
    return shards


def write_state(target: Path, infos: list[TensorInfo],
                tensors: Iterable[tuple[str, torch.Tensor]], metadata: dict[str, str],
                max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> list[Path]:
    """Write tensors to ``target`` and return the files written.

    A ``target`` ending in ``.safetensors`` is one file. Otherwise it is a folder that gets
    ``model.safetensors``, or shards plus ``model.safetensors.index.json`` when the total
    exceeds ``max_shard_size`` bytes.
    """
    check_target(target)
    stream = iter(tensors)
    try:
        if target.suffix == ".safetensors":
            write_file(target, infos, stream, metadata)
            return [target]
        # Build the folder in a sibling temp folder, then swap it in: a failure anywhere
        # leaves neither a partial shard nor an index pointing at missing shards.
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".tmp"))
        try:
            names = _write_folder(staging, infos, stream, metadata, max_shard_size)
            check_target(target)  # again: files may have appeared while the init was written
            replace_folder(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        size = sum(info.nbytes for info in infos)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"cannot write {target}: its file system is full ({err.strerror}"
                                f"; the init needs {size:,} bytes): free some space or choose "
                                "another output path") from err
        raise OutputPathError(f"cannot write {target}: {err.strerror or err}") from err
    return [target / name for name in names]


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder ``staging`` at ``target``, in place of an earlier one there
    (an init, a generator).

    A new or empty ``target`` is replaced in one rename. An earlier folder takes two: it is
    moved aside, then ``staging`` moves in (and the old one is deleted), so at no moment
    does ``target`` hold a mix of old and new files; a crash between the renames leaves the
    old folder beside it as ``<staging>.old``.
    """
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes it private to its owner
    if not (target.is_dir() and any(target.iterdir())):
        os.replace(staging, target)
        return
    old = staging.with_name(f"{staging.name}.old")
    os.rename(target, old)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old)


def _write_folder(folder: Path, infos: list[TensorInfo], stream: Iterator,
                  metadata: dict[str, str], max_shard_size: int) -> list[str]:
    plan = shard_plan(infos, max_shard_size)
    if len(plan) == 1:
        write_file(folder / SINGLE_FILE, infos, stream, metadata)
        return [SINGLE_FILE]
    names, weight_map = [], {}
    for i, shard in enumerate(plan, start=1):
        name = f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        write_file(folder / name, shard, stream, metadata)
        names.append(name)
        weight_map.update(dict.fromkeys((info.name for info in shard), name))
    index = {"metadata": {**metadata, "total_size": sum(i.nbytes for i in infos)},
             "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return [*names, INDEX_FILE]
