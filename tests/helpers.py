"""Small checks that several test modules share."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from typing import Any

import pytest

from hyperinit.cli import main


def cli_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """The command's one-line error (it exits 2, prints nothing else and no traceback)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"hyperinit {argv[0]}: error: ")
    return captured.err


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


# A small file system of its own, in a user and mount namespace (no root needed).
needs_mount = pytest.mark.skipif(not _can_mount(),
                                 reason="needs `unshare -rm` to mount a small tmpfs")


def in_tmpfs(options: str, then: str = 'exec "$@"') -> list[str]:
    """A command prefix: mount a tmpfs (``mount -o options``) at the folder given as the
    first argument after the prefix, then run the shell line ``then`` there, in which
    ``$0`` is that folder and ``"$@"`` the rest of the arguments."""
    return ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "$0" && {then}']


class FullDisk:
    """A file opened for writing whose writes fail with ENOSPC once ``room`` bytes were
    written: a disk filling up, where no small file system can be mounted."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.file.write(data)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def full_disk_open(room: int):
    """An ``open`` whose files for writing fill up after ``room`` bytes."""

    def opener(path, mode="r", *args, **kwargs):
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115 (an open() stand-in)
        return FullDisk(file, room) if "w" in mode else file

    return opener
