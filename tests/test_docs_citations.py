"""Source comments and docstrings cite the repository's own documentation, and what they cite exists.

(a) A citation ``docs/<name>.md`` names a file of ``docs/``; followed by sections (``§7``, ``§7.6``, ``§7.2-§7.7``,
``§2.3/§3.3``, ``§7, §10``) each section exists in that file: ``## 7.`` for ``§7``; for ``§7.6`` a heading
``### 7.6``, a subsection label (a line starting ``- §7.6``, or ``- §7.2–§7.7``, as docs/format.md writes them)
or item ``6.`` of the numbered list of ``## 7.`` (as docs/analysis.md writes them). Followed by
a topic (``docs/analysis.md, lick rate``) the topic's words occur in that file.
(b) Nothing cites the specification files that are not in the repository: a bare ``format.md``, ``api.md``,
``analysis.md``, ``users.md`` or ``spec/...`` not preceded by ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = sorted(p for p in (ROOT / "src").rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".yml"))

GAP = r"(?:``|`)?[\s#]*"  # closing quotes of ``docs/x.md``, then spaces, line breaks and comment markers
CITATION = re.compile(r"(?<![\w/.-])docs/(?P<name>[\w.-]+?\.md)")
SECTION = re.compile(GAP + r"(?:(?:,|-|–|/|and|or)[\s#]*)?§(?P<number>\d+(?:\.\d+)*)")
TOPIC = re.compile(GAP + r",\s*(?:``|\")?(?P<topic>[A-Za-z][\w′' -]*[\w′])")
LABEL = re.compile(r"^\s*(?:[-*]\s+)?§(?P<first>\d+(?:\.\d+)*)(?:\s*[-–]\s*§(?P<last>\d+(?:\.\d+)*))?",
                   re.MULTILINE)
SPEC_NAMES = ("format", "api", "analysis", "users")
SPEC_CITATION = re.compile(r"(?<![\w/.-])(?:(?:" + "|".join(SPEC_NAMES) + r")\.md|spec/[\w./-]*)")


def _citations(text: str) -> list[tuple[int, str, list[str], str | None]]:
    """Every ``docs/<name>.md`` citation of ``text``: (line, file name, section numbers, topic or None)."""
    found = []
    for match in CITATION.finditer(text):
        sections, at = [], match.end()
        while (section := SECTION.match(text, at)) is not None:
            sections.append(section["number"])
            at = section.end()
        topic = None if sections else TOPIC.match(text, match.end())
        found.append((text.count("\n", 0, match.start()) + 1, match["name"], sections,
                      topic["topic"] if topic else None))
    return found


def _has_section(doc: str, number: str) -> bool:
    """Whether ``doc`` defines section ``number``: a heading ``## N.`` / ``### N.M``; a line labelled ``§N.M`` or
    with a range ``§N.A–§N.B`` holding it (as docs/format.md labels its subsections); or item ``M.`` of the
    numbered list of section ``## N.`` (as docs/analysis.md numbers the parts of a section)."""
    parts = [int(p) for p in number.split(".")]
    heading = rf"^{'#' * (len(parts) + 1)}\s+{re.escape(number)}\.?(\s|$)"
    if re.search(heading, doc, re.MULTILINE):
        return True
    for label in LABEL.finditer(doc):
        first = [int(p) for p in label["first"].split(".")]
        last = [int(p) for p in label["last"].split(".")] if label["last"] else first
        if len(first) == len(last) == len(parts) and first[:-1] == last[:-1] == parts[:-1] \
                and first[-1] <= parts[-1] <= last[-1]:
            return True
    if len(parts) == 2:
        section = re.search(rf"^## {parts[0]}\.\s.*?(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)
        return section is not None and re.search(rf"^{parts[1]}\.\s", section.group(0), re.MULTILINE) is not None
    return False


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_sources_were_found():
    assert len(SOURCES) > 20 and any(p.name == "experiment.py" for p in SOURCES)


def test_the_citation_parser():
    """Positive and negative controls of the parsing rules, on made-up text."""
    text = ("(``docs/format.md`` §7, §10) and docs/format.md §7.2-§7.7 or (docs/format.md §2.3/§3.3)\n"
            "# docs/format.md\n# §6.6 rule; see docs/analysis.md, lick rate. Also docs/quirks.md).")
    assert [(name, sections, topic) for _, name, sections, topic in _citations(text)] == [
        ("format.md", ["7", "10"], None), ("format.md", ["7.2", "7.7"], None), ("format.md", ["2.3", "3.3"], None),
        ("format.md", ["6.6"], None), ("analysis.md", [], "lick rate"), ("quirks.md", [], None)]
    doc = ("## 7. NWB files\n\n- §7.6 Trials\n- §6.2–§6.4 Derived\n### 8.1 Eye\n## 9. Figures\n\n1. One\n"
           "2. Two\n   3. not an item\n## 10. End\n")
    assert all(_has_section(doc, n) for n in ("7", "7.6", "6.2", "6.3", "6.4", "8.1", "9", "9.1", "9.2", "10"))
    assert not any(_has_section(doc, n) for n in ("8", "7.60", "7.5", "6", "6.5", "6.1", "9.3", "10.1", "7.1"))
    bare = "format.md §7, ``api.md`` Q38, (analysis.md P14), users.md REQ-07, spec/format.md §7.4"
    assert len(SPEC_CITATION.findall(bare)) == 5
    assert SPEC_CITATION.findall("docs/format.md §7, docs/analysis.md §3, reformat.md, my_api.md") == []


@pytest.mark.parametrize("path", SOURCES, ids=_relative)
def test_citations_of_the_docs_exist(path):
    text = path.read_text(encoding="utf-8")
    wrong = []
    for line, name, sections, topic in _citations(text):
        doc_path = DOCS / name
        if not doc_path.is_file():
            wrong.append(f"line {line}: docs/{name} does not exist")
            continue
        doc = doc_path.read_text(encoding="utf-8")
        wrong += [f"line {line}: docs/{name} has no section §{n}" for n in sections if not _has_section(doc, n)]
        if topic is not None and not all(word.lower() in doc.lower() for word in topic.split()):
            wrong.append(f"line {line}: docs/{name} does not mention {topic!r}")
    assert not wrong, f"{_relative(path)}:\n" + "\n".join(wrong)


def test_no_citation_of_spec_files_outside_the_repository():
    offending = {}
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SPEC_CITATION.search(line):
                offending.setdefault(_relative(path), []).append(number)
    assert not offending, ("cite docs/format.md §N or docs/analysis.md instead of the specification files; "
                           f"offending lines: {offending}")
