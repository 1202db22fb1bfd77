"""Corpus readers: every supported `--train_corpus` as one stream of raw documents, never fully in memory.

- MediaWiki XML dumps (`.xml`, `.xml.bz2`; export schemas 0.10 and 0.11, with or without <siteinfo>):
  main-namespace articles only, redirects skipped; the wikitext is cleaned later, in the workers.
- WikiExtractor output: `<doc ...>` blocks of text, or `--json` lines with a "text" field.
- Plain text in the TinyBERT layout: one sentence per line, a blank line between documents.
- A directory: every file below it, in sorted order, each read by its own kind.

Dumps are read with the standard library's streaming expat parser: mwxml refuses dump excerpts without a
<siteinfo> element (e.g. the shipped enwiki-20250201 excerpt, and multistream chunks).
"""
from __future__ import annotations

import bz2
import dataclasses
import html
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from stagekit.errors import InputError

WIKITEXT, PARAGRAPHS, SENTENCES = "wikitext", "paragraphs", "sentences"


@dataclasses.dataclass
class RawDocument:
    """One document before cleaning: `text` is wikitext, paragraphs, or sentences, as `kind` says."""

    kind: str
    title: str
    text: str | list[str]


def iter_documents(corpus: str | Path) -> Iterator[RawDocument]:
    """All documents of a corpus path, in a deterministic order."""
    path = Path(corpus)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(f"--train_corpus {path}: directory holds no files")
        for f in files:
            yield from _iter_file(f)
    elif path.is_file():
        yield from _iter_file(path)
    else:
        raise InputError(f"--train_corpus {path}: no such file or directory")


def _open_binary(path: Path):
    return bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb")


def _iter_file(path: Path) -> Iterator[RawDocument]:
    try:
        with _open_binary(path) as f:
            head = f.read(4096)
    except OSError as e:
        raise InputError(f"--train_corpus {path}: cannot read ({e})") from e
    except EOFError as e:
        raise InputError(f"--train_corpus {path}: truncated compressed stream ({e})") from e
    start = head.lstrip()
    if start.startswith(b"<?xml") or start.startswith(b"<mediawiki"):
        yield from _iter_dump(path)
    elif path.name.endswith((".xml", ".xml.bz2")):
        raise InputError(f"--train_corpus {path}: not an XML file (expected a MediaWiki dump)")
    elif start.startswith(b"<doc"):
        yield from _iter_wikiextractor_docs(path)
    elif start.startswith(b"{"):
        yield from _iter_wikiextractor_json(path)
    else:
        yield from _iter_plain_text(path)


def _iter_dump(path: Path) -> Iterator[RawDocument]:
    """Stream <page> elements; each is cleared once read, so memory does not grow with the dump."""
    try:
        with _open_binary(path) as f:
            context = ET.iterparse(f, events=("start", "end"))
            _, root = next(context)
            if _local(root.tag) != "mediawiki":
                raise InputError(f"--train_corpus {path}: XML root is <{_local(root.tag)}>, not a MediaWiki dump")
            for event, el in context:
                if event != "end" or _local(el.tag) != "page":
                    continue
                doc = _page_document(el)
                root.clear()  # drop every finished page, not only this one's children
                if doc is not None:
                    yield doc
    except ET.ParseError as e:
        raise InputError(f"--train_corpus {path}: malformed XML ({e})") from e
    except EOFError as e:
        raise InputError(f"--train_corpus {path}: truncated compressed stream ({e})") from e
    except OSError as e:
        raise InputError(f"--train_corpus {path}: corrupt or unreadable ({e})") from e


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _page_document(page: ET.Element) -> RawDocument | None:
    fields = {_local(child.tag): child for child in page}
    ns, title, revision = fields.get("ns"), fields.get("title"), fields.get("revision")
    if ns is None or (ns.text or "").strip() != "0" or "redirect" in fields or revision is None:
        return None
    text_el = next((c for c in revision if _local(c.tag) == "text"), None)
    text = text_el.text if text_el is not None else None
    if not text or text.lstrip()[:9].upper() == "#REDIRECT":
        return None
    return RawDocument(WIKITEXT, (title.text or "") if title is not None else "", text)


_DOC_TITLE = re.compile(r'\btitle="([^"]*)"')


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; non-UTF-8 bytes are an error naming the line."""
    try:
        with _open_binary(path) as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"--train_corpus {path}:{number}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except EOFError as e:
        raise InputError(f"--train_corpus {path}: truncated compressed stream ({e})") from e


def _iter_wikiextractor_docs(path: Path) -> Iterator[RawDocument]:
    title, lines, inside = "", [], False
    for number, line in _decoded_lines(path):
        stripped = line.strip()
        if stripped.startswith("<doc"):
            m = _DOC_TITLE.search(stripped)
            title, lines, inside = html.unescape(m.group(1)) if m else "", [], True
        elif stripped == "</doc>":
            # WikiExtractor repeats the title as the first line of the text.
            body = lines[1:] if lines and lines[0] == title else lines
            yield RawDocument(PARAGRAPHS, title, [p for p in body if p])
            inside = False
        elif inside:
            lines.append(stripped)
        elif stripped:
            raise InputError(f"--train_corpus {path}:{number}: text outside a <doc> block")
    if inside:
        raise InputError(f"--train_corpus {path}: last <doc> block is not closed (truncated file?)")


def _iter_wikiextractor_json(path: Path) -> Iterator[RawDocument]:
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"--train_corpus {path}:{number}: not a WikiExtractor JSON line with a 'text' field") from e
        paragraphs = [p.strip() for p in text.split("\n") if p.strip()]
        title = str(record.get("title", ""))
        if paragraphs and paragraphs[0] == title:
            paragraphs = paragraphs[1:]
        yield RawDocument(PARAGRAPHS, title, paragraphs)


def _iter_plain_text(path: Path) -> Iterator[RawDocument]:
    sentences: list[str] = []
    for _, line in _decoded_lines(path):
        stripped = line.strip()
        if stripped:
            sentences.append(stripped)
        elif sentences:
            yield RawDocument(SENTENCES, "", sentences)
            sentences = []
    if sentences:
        yield RawDocument(SENTENCES, "", sentences)
