"""Documentation where Jupyter looks: ``obj.member?``, ``help(...)`` show each member's own docs, reading nothing.

Uses IPython's real inspector (``InteractiveShell.object_inspect_text``, what ``obj.member?`` prints) and
pydoc's text renderer (what ``help()`` prints). "Nothing read" is measured at the file pool: every access
to an object's file goes through :meth:`vbo.nwb.pool.FilePool.checkout`.
"""

from __future__ import annotations

import inspect
import pydoc
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import vbo
from vbo.members import DataMember
from vbo.nwb import pool as file_pool

CLASSES = {"session": vbo.BehaviorSession, "experiment": vbo.BehaviorOphysExperiment}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FOREIGN_DOCS = ("Two-dimensional, size-mutable", "ndarray(shape", "Built-in mutable sequence",
                "dict() -> new empty dictionary", "int([x]) -> integer")
CASES = [(kind, name) for kind, cls in CLASSES.items() for name in sorted(cls._DATA_MEMBERS)]


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """IPython's interactive shell (no history file; profile in a temporary folder)."""
    pytest.importorskip("IPython")
    import os

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    os.environ.setdefault("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    config = Config()
    config.HistoryManager.enabled = False
    return InteractiveShell.instance(config=config)


@pytest.fixture
def file_accesses(monkeypatch):
    """Count every borrowing of an object's file from the pool."""
    calls: list[str] = []
    checkout = file_pool.FilePool.checkout

    def counting(self, handle, *, pin):
        calls.append(handle.name)
        return checkout(self, handle, pin=pin)

    monkeypatch.setattr(file_pool.FilePool, "checkout", counting)
    return calls


def _open(kind: str, session_nwb, experiment_nwb):
    return CLASSES[kind].from_nwb_path(experiment_nwb if kind == "experiment" else session_nwb)


def _own_doc(cls, name: str) -> str:
    doc = inspect.getdoc(getattr(cls, name))
    assert doc, f"{cls.__name__}.{name} has no documentation"
    return doc


def _summary(doc: str) -> str:
    return doc.strip().splitlines()[0].strip()


def _inspected(shell, obj, name: str) -> str:
    shell.user_ns["obj"] = obj
    return ANSI.sub("", shell.object_inspect_text(f"obj.{name}"))


@pytest.mark.parametrize("kind,name", CASES, ids=[f"{k}.{n}" for k, n in CASES])
def test_inspector_and_help_show_the_member_doc_without_reading(kind, name, shell, file_accesses,
                                                                session_nwb, experiment_nwb):
    cls = CLASSES[kind]
    doc = _own_doc(cls, name)
    with _open(kind, session_nwb, experiment_nwb) as obj:
        file_accesses.clear()
        text = _inspected(shell, obj, name)  # what `obj.member?` prints
        assert _summary(doc) in text, text
        assert not any(marker in text for marker in FOREIGN_DOCS), text
        rendered = [pydoc.render_doc(getattr(cls, name), renderer=pydoc.plaintext)]  # help(Class.member)
        if inspect.isfunction(getattr(cls, name)):
            rendered.append(pydoc.render_doc(getattr(obj, name), renderer=pydoc.plaintext))  # help(obj.method)
        for page in rendered:
            assert _summary(doc) in page and doc.splitlines()[-1].strip() in page, page
        assert file_accesses == [], f"inspecting {name} touched the file"
        member = inspect.getattr_static(obj, name)
        if isinstance(member, DataMember):
            assert not member.is_read(obj)
        assert name not in vars(obj)


@pytest.mark.parametrize("kind", CLASSES)
def test_inspection_works_on_a_closed_object(kind, shell, session_nwb, experiment_nwb):
    """Reading would raise SessionClosedError; the inspector still shows every member's documentation."""
    cls = CLASSES[kind]
    obj = _open(kind, session_nwb, experiment_nwb)
    obj.close()
    for name in cls._DATA_MEMBERS:
        assert _summary(_own_doc(cls, name)) in _inspected(shell, obj, name), name
    with pytest.raises(vbo.errors.SessionClosedError):
        obj.trials  # positive control: the value is not reachable


@pytest.mark.parametrize("kind", CLASSES)
def test_help_of_the_class_documents_every_member(kind):
    cls = CLASSES[kind]
    page = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for name in cls._DATA_MEMBERS:
        doc = _own_doc(cls, name)
        assert re.search(rf"^\s*\|?\s*{name}(\(|$)", page, re.MULTILINE), f"help({cls.__name__}) misses {name}"
        assert _summary(doc) in page, f"help({cls.__name__}) lacks the doc of {name}"


def _value_of(obj, name: str):
    member = getattr(obj, name)
    if not callable(member):
        return member
    signature = inspect.signature(member)
    if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
           for p in signature.parameters.values()) or name == "update_targeted_imaging_depth":
        return None  # needs arguments, or is not available (documented as such)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy methods warn by design
        return member()


def _names_in(value) -> list[str]:
    """Index name, columns or keys that the documentation must name."""
    if isinstance(value, pd.DataFrame):
        names = [str(c) for c in value.columns]
        return names + ([value.index.name] if value.index.name else [])
    if isinstance(value, dict):
        return [str(k) for k in value]
    return []


@pytest.mark.parametrize("kind", CLASSES)
def test_docs_name_every_column_index_and_key(kind, session_nwb, experiment_nwb):
    """The documentation is about the value: every column, index name and dict key it returns is named."""
    cls = CLASSES[kind]
    with _open(kind, session_nwb, experiment_nwb) as obj, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(cls._DATA_MEMBERS):
            doc = _own_doc(cls, name)
            assert "Same as" not in doc, f"{name}: {doc}"
            assert len(doc) >= 80, f"{name}: documentation too thin: {doc!r}"
            value = _value_of(obj, name)
            missing = [n for n in _names_in(value) if not re.search(rf"\b{re.escape(n)}\b", doc)]
            assert not missing, f"{cls.__name__}.{name} does not document {missing}"
            if isinstance(value, (pd.DataFrame, np.ndarray)) or hasattr(value, "spacing"):
                assert re.search(r"(?<!\w)(s|cm/s|mL|px|px²|rad|mm|a\.u\.|unitless|Hz)(?!\w)|ΔF/F|rewards/min|intensity", doc), \
                    f"{name}: no unit in its documentation"
