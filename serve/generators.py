"""The generators a server offers, loaded once at start and looked up by name per request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import hyperinit
from hyperinit.predict import generator_id

from .errors import ServiceError


@dataclass(frozen=True)
class LoadedGenerator:
    """A generator ready to predict, with the names clients and metadata know it by."""

    name: str
    id: str
    model: hyperinit.GraphHyperNetwork


class GeneratorSet:
    """The allowed generators: shipped names, ``untrained``, or checkpoint folders.

    A folder is requested by its name (``/models/ghn-t`` -> ``"ghn-t"``), so clients never
    see or send server paths.
    """

    def __init__(self, entries: tuple[str, ...], default: str | None) -> None:
        self._by_name: dict[str, LoadedGenerator] = {}
        for entry in entries:
            name = Path(entry).name if Path(entry).is_dir() else entry
            if name in self._by_name:
                raise ValueError(f"two generators are named {name!r}: rename a folder")
            model = hyperinit.load_generator(entry)
            self._by_name[name] = LoadedGenerator(name, generator_id(model), model)
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

    def describe(self) -> list[dict]:
        return [{"name": g.name, "id": g.id, "default": g.name == self.default,
                 "config": asdict(g.model.config)} for g in self._by_name.values()]
