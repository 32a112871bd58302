"""Registries for things that come in kinds: quantize backends, export formats, eval kinds, stages.

A kind is one module that registers an object satisfying its registry's protocol::

    from hubpub.registry import backends

    @backends.register
    class MyBackend: ...          # or backends.register(instance)

Third-party packages plug in through entry points (the group is the registry's ``group``)::

    [project.entry-points."hubpub.backends"]
    mybackend = "my_pkg.backend:MyBackend"

Entry points are loaded lazily, the first time a registry is asked for its members, so
``hubpub --help`` never imports a plugin. A plugin that fails to import or does not satisfy the
protocol is a :class:`~hubpub.errors.PluginError` naming its distribution.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import PluginError

T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """A name -> member table, filled by built-in modules and by entry-point plugins.

    ``builtin`` lists the modules that register the built-in members; they are imported on first
    use (importing them must stay light: no torch at import time).
    ``required`` lists the attributes every member must have (the protocol, checked on register).
    """

    kind: str  # "quantize backend", "export format", ...
    group: str  # entry-point group, e.g. "hubpub.backends"
    builtin: tuple[str, ...] = ()
    required: tuple[str, ...] = ("name",)
    _members: dict[str, T] = field(default_factory=dict)
    _origin: dict[str, str] = field(default_factory=dict)
    _loaded: bool = False

    # -- registering ---------------------------------------------------------------------
    def register(self, member: Any = None, *, origin: str = "hubpub") -> Any:
        """Register a member (an instance, or a class that is instantiated without arguments).

        Usable as a decorator; returns what it was given.
        """
        if member is None:
            return lambda m: self.register(m, origin=origin)
        instance = member() if isinstance(member, type) else member
        missing = [attr for attr in self.required if not hasattr(instance, attr)]
        if missing:
            raise PluginError(
                f"{origin}: {type(instance).__name__} is not a {self.kind}: it lacks {', '.join(missing)}"
                f" (see docs/CONTRACTS.md)"
            )
        name = getattr(instance, "name")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{origin}: {type(instance).__name__}.name must be a non-empty string")
        known = self._origin.get(name)
        if known is not None and known != origin:
            raise PluginError(f"{origin}: {self.kind} {name!r} is already provided by {known}; rename one of them")
        self._members[name] = instance
        self._origin[name] = origin
        return member

    def unregister(self, name: str) -> None:
        self._members.pop(name, None)
        self._origin.pop(name, None)

    # -- loading -------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin:
            importlib.import_module(module)
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            dist = getattr(ep.dist, "name", None) or ep.value
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin is the plugin's fault: name it
                raise PluginError(
                    f"plugin {dist!r} ({self.group} entry point {ep.name!r} = {ep.value!r}) failed to import:"
                    f" {type(exc).__name__}: {exc}; fix or uninstall it (pip uninstall {dist})"
                ) from None
            if ep.name in self._members and self._origin.get(ep.name) == f"plugin {dist}":
                continue
            self.register(obj, origin=f"plugin {dist}")

    # -- reading -------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load()
        return sorted(self._members)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._members

    def __iter__(self) -> Iterator[T]:
        self._load()
        return iter([self._members[n] for n in sorted(self._members)])

    def get(self, name: str) -> T:
        """The member called name; KeyError-free: an unknown name is a ValueError whose text
        lists the installed choices (pydantic validators turn it into a field-path error)."""
        self._load()
        try:
            return self._members[name]
        except KeyError:
            raise ValueError(self.unknown(name)) from None

    def origin(self, name: str) -> str:
        self._load()
        return self._origin.get(name, "")

    def unknown(self, name: str) -> str:
        choices = self.names()
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (installed: {', '.join(choices) or 'none'})"


def lazy(path: str) -> Callable[..., Any]:
    """A function that imports ``module:attr`` when first called (keeps registries light)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = path.rsplit(":", 1)[-1]
    return call
