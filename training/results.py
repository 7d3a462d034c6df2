"""Resumable results: rows appended to ``OUT/results.jsonl`` as they finish, so a restarted
run skips them, a ``config.json`` that keeps a folder's rows comparable, and atomic text
writes (which the trainer and the zoo use too).

``hyperinit eval`` (:mod:`training.evaluate`) and ``hyperinit zoo eval``
(:mod:`training.zoo_eval`) both run this way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperinit.safetensors_io import atomic_path

RESULTS = "results.jsonl"


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_resumable(config: dict[str, Any], out: Path, options: tuple[str, ...],
                    added: Mapping[str, Any] | None = None) -> None:
    """Write ``config`` to ``OUT/config.json``; refuse an ``out`` whose rows (``results.jsonl``)
    were made with other values of ``options``, the ones that change a row's numbers.
    ``added`` holds options introduced later, with the value that rows made before them had
    (a ``config.json`` without the option)."""
    path = out / "config.json"
    if path.is_file() and (out / RESULTS).is_file():
        theirs = {**(added or {}), **json.loads(path.read_text())}
        changed = [k for k in options if theirs.get(k) != config[k]]
        if changed:
            raise ValueError(
                f"{out} holds results made with other {', '.join(changed)} "
                f"({', '.join(f'{k}={theirs.get(k)!r}' for k in changed)}): use another out "
                "folder, or delete it to start over")
    write_text(path, json.dumps(config, indent=2))


def load_rows(path: Path, key: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    """Finished rows by the values of ``key``. A line cut short by a crash is dropped for
    good (the file is rewritten without it; a file without one is left as it is)."""
    if not path.is_file():
        return {}
    rows, lines = {}, []
    read = path.read_text().splitlines()
    for line in read:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[tuple(row[k] for k in key)] = row
        lines.append(line)
    if len(lines) < len(read):
        write_text(path, "".join(line + "\n" for line in lines))
    return rows
