"""Lazily read data members: a ``property`` (so IPython and pydoc show their documentation) cached per object."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

_MISSING = object()


class DataMember(property):
    """A data member of a session or experiment: read from its file on first access, then kept on the object."""

    # Subclassing ``property`` is what lets ``obj.member?`` in IPython, ``help(Class)`` and ``help(Class.member)``
    # show the member's own documentation without reading anything: IPython inspects a ``property`` found on the
    # class instead of evaluating it, and pydoc lists it with its docstring. The value is stored in the object's
    # ``__dict__`` under the member's name (a ``property`` takes precedence over the instance dictionary, so the
    # lookup is explicit). While the value is computed the object's file is pinned (``obj._reading()``), so the
    # file pool cannot close it mid-read. Assigning to the member replaces the stored value; ``del`` forgets it.

    def __init__(self, fget: Callable[[Any], Any], doc: str | None = None):
        doc = doc if doc is not None else fget.__doc__
        super().__init__(fget, None, None, doc)
        self.__doc__ = doc  # in the instance: the class docstring would otherwise shadow it
        self.name = fget.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.owner = owner.__name__

    def __repr__(self) -> str:
        return f"<data member {getattr(self, 'owner', '?')}.{self.name}>"

    @property
    def func(self) -> Callable[[Any], Any]:
        """The function computing the value (as ``functools.cached_property.func``)."""
        return self.fget

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        stored = obj.__dict__.get(self.name, _MISSING)
        if stored is not _MISSING:
            return stored
        reading = getattr(obj, "_reading", None)
        with reading(self.name) if reading is not None else nullcontext():
            value = self.fget(obj)
        return obj.__dict__.setdefault(self.name, value)

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.name] = value

    def __delete__(self, obj) -> None:
        obj.__dict__.pop(self.name, None)

    def is_read(self, obj) -> bool:
        """True when ``obj`` already holds this member's value."""
        return self.name in obj.__dict__


def data_member(fget: Callable[[Any], Any] | None = None, *,
                doc: str | None = None) -> DataMember | Callable[[Callable[[Any], Any]], DataMember]:
    """Decorate a method computing a data member from the object's file (see :class:`DataMember`).

    ``@data_member`` documents the member with the method's docstring; ``@data_member(doc=text)`` with
    ``text`` instead, for members of one kind whose documentation is built from one template (the text is
    fixed when the class is defined, so ``help()`` and ``obj.member?`` show it without reading anything).
    """
    if fget is None:
        return lambda method: DataMember(method, doc)
    return DataMember(fget, doc)
