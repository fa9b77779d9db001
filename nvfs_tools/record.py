"""Small record classes without the ``dataclasses`` module.

Importing ``dataclasses`` (it loads ``inspect``, ``ast``, ``dis``) and creating
each dataclass cost more than ``mkfs -d`` of a small tree spends on its work,
and the library declares a dozen of them on that path.  :class:`Fields` gives
what they took from ``@dataclass`` -- a ``repr`` and an equality over the
declared fields, in order, between objects of the same class -- and each
class writes its own ``__init__`` (assigning attributes, as the generated one
did).
"""

from __future__ import annotations


class Fields:
    """Base of a record: ``_fields`` names the attributes that ``repr`` shows and ``==`` compares."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass with eq
