"""A small name -> object registry (backbones, meta-architectures, ...).

    BACKBONES = Registry("backbone")

    @BACKBONES.register("vgg16")          # or @BACKBONES.register() to use the function's __name__
    def build_vgg16(...): ...

    BACKBONES.get("vgg16")                # unknown name -> KeyError listing the valid names
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator, Optional


class Registry:
    """Maps names to objects; registering a name twice is an error."""

    def __init__(self, name: str):
        self.name = name
        self._obj: dict = {}

    def register(self, name: Optional[str] = None, obj: Any = None):
        """``register("x")`` / ``register()`` as a decorator, or ``register("x", obj)`` directly; returns obj."""
        if obj is not None:
            self._add(name or obj.__name__, obj)
            return obj

        def deco(o):
            self._add(name or o.__name__, o)
            return o

        return deco

    def _add(self, name: str, obj: Any) -> None:
        if name in self._obj:
            raise KeyError(f"{name!r} is already registered in the {self.name} registry")
        self._obj[name] = obj

    def get(self, name: str) -> Any:
        """The object registered as ``name``; KeyError listing the valid names if there is none."""
        try:
            return self._obj[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._obj), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(sorted(self._obj))
            raise KeyError(f"no {self.name} named {name!r}; valid names: {valid}.{hint}") from None

    def names(self) -> list:
        return sorted(self._obj)

    def __contains__(self, name) -> bool:
        return name in self._obj

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._obj)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {self.names()})"


__all__ = ["Registry"]
