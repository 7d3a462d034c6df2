"""The generators a server offers, loaded once at start and looked up by name per request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from hyperinit.catalog import load_generator
from hyperinit.generator import Generator

from .errors import ServiceError


@dataclass(frozen=True)
class LoadedGenerator:
    """A generator of any kind ready to predict, with the names clients and metadata know
    it by (``id`` is ``model.id``, computed once: it hashes the weights file)."""

    name: str
    id: str
    model: Generator


class GeneratorSet:
    """The allowed generators: shipped names, ``untrained``, checkpoint folders of any kind
    (``hyperinit.load_generator`` reads them), or ``hub:`` references.

    A folder is requested by its name (``/models/ghn-t`` -> ``"ghn-t"``), so clients never
    see or send server paths.
    """

    def __init__(self, entries: tuple[str, ...], default: str | None) -> None:
        self._by_name: dict[str, LoadedGenerator] = {}
        for entry in entries:
            name = Path(entry).name if Path(entry).is_dir() else entry
            if name in self._by_name:
                raise ValueError(f"two generators are named {name!r}: rename a folder")
            model = load_generator(entry)
            self._by_name[name] = LoadedGenerator(name, model.id, model)
        self.default = default or next(iter(self._by_name))
        if self.default not in self._by_name:
            raise ValueError(f"default generator {self.default!r} is not among the served "
                             f"generators: {', '.join(self._by_name)}")

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str | None) -> LoadedGenerator:
        """The generator a request names (or the default); 422 listing the allowed ones."""
        name = name or self.default
        if name not in self._by_name:
            raise ServiceError(422, "unknown_generator",
                               f"unknown generator {name!r}: this server offers "
                               f"{', '.join(self._by_name)}", allowed=self.names)
        return self._by_name[name]

    def taking_tasks(self) -> list[str]:
        """Names of the generators conditioned on tasks (``task_dim`` > 0): those a request
        with a ``task`` may name."""
        return [g.name for g in self._by_name.values() if g.model.task_dim]

    def describe(self) -> list[dict]:
        """Each generator as ``GET /v1/generators`` lists it."""
        return [{"name": g.name, "id": g.id, "default": g.name == self.default,
                 "kind": g.model.kind, "config": asdict(g.model.config),
                 "defaults": asdict(g.model.defaults)} for g in self._by_name.values()]
