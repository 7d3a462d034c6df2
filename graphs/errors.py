"""Errors raised by graph extraction and architecture resolution."""

from __future__ import annotations


class GraphBuildError(ValueError):
    """The model could not be traced into a graph (bad object, or its forward failed)."""


class UnknownArchitectureError(ValueError):
    """An architecture spec names nothing we can build; the message lists close matches."""


class ArchitectureTooLargeError(ValueError):
    """An architecture has more parameters or modules than a limit allows (found before it
    was built: see ``graphs.size``)."""


class PartialGraphWarning(UserWarning):
    """The forward stopped at an op whose output shape depends on input values (detection
    post-processing, pooling at end-of-sequence tokens): the graph covers the modules that
    finished before it, and every other parameter is an unconnected node."""
