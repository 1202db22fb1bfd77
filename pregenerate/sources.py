"""Corpus readers: every supported `--train_corpus` as a stream of parts that workers turn into raw documents,
never fully in memory.

- MediaWiki XML dumps (`.xml`, `.xml.bz2`, multistream or not; any encoding; export schemas 0.10 and 0.11, with
  or without <siteinfo>): main-namespace articles only, redirects skipped; see `dumps` for how they are cut;
  the wikitext is cleaned later, in the workers.
- WikiExtractor output: `<doc ...>` blocks of text, or `--json` lines with a "text" field.
- Plain text in the TinyBERT layout: one sentence per line, a blank line between documents.
- A directory: every file below it, in sorted order, each read by its own kind.

Dumps are read with the standard library's expat parser: mwxml refuses dump excerpts without a <siteinfo>
element (e.g. the shipped enwiki-20250201 excerpt, and multistream chunks).
"""
from __future__ import annotations

import bz2
import codecs
import dataclasses
import html
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path

from stagekit.errors import InputError

from .dumps import PageChunk, StreamRange, dump_site, iter_dump_parts, sniff_encoding
from .wikitext import ENGLISH, Site

WIKITEXT, PARAGRAPHS, SENTENCES = "wikitext", "paragraphs", "sentences"
BATCH_DOCUMENTS = 16


@dataclasses.dataclass
class RawDocument:
    """One document before cleaning: `text` is wikitext, paragraphs, or sentences, as `kind` says; `site` is the
    wiki that wikitext comes from."""

    kind: str
    title: str
    text: str | list[str]
    site: Site = ENGLISH


@dataclasses.dataclass
class DocumentBatch:
    """Documents that the reader has already split (text corpora)."""

    docs: list[RawDocument]


Part = DocumentBatch | PageChunk | StreamRange


def part_documents(part: Part) -> list[RawDocument]:
    """The documents of a part; dump parts are parsed here (in the worker that cleans them)."""
    if isinstance(part, DocumentBatch):
        return part.docs
    return [RawDocument(WIKITEXT, page.title, page.text, part.site) for page in part.pages()]


def iter_parts(corpus: str | Path, language: str | None = None, read_threads: int = 1,
               dump_slice: tuple[int, int] | None = None) -> Iterator[Part]:
    """All parts of a corpus path, in a deterministic order that does not depend on `read_threads`; with
    `dump_slice` (i, n), the i-th of n slices of one multistream dump."""
    path = Path(corpus)
    if dump_slice is not None:
        encoding = _sniffed(path) if path.is_file() else None
        if encoding is None:
            raise InputError(f"--dump_parts {dump_slice[1]}: --train_corpus {path} is not a MediaWiki dump file")
        yield from iter_dump_parts(path, *encoding, language, read_threads, dump_slice)
    else:
        for f in _corpus_files(path):
            yield from _file_parts(f, language, read_threads)


def corpus_language(corpus: str | Path) -> str | None:
    """The language that the first dump of a corpus declares; None for a corpus without dumps."""
    for f in _corpus_files(Path(corpus)):
        encoding = _sniffed(f)
        if encoding is not None:
            return dump_site(f, *encoding).language
    return None


def _corpus_files(path: Path) -> list[Path]:
    """The file, or every file below the directory in sorted order (hidden ones left out)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"--train_corpus {path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"--train_corpus {path}: directory holds no files")
    return files


def iter_documents(corpus: str | Path, language: str | None = None) -> Iterator[RawDocument]:
    """All documents of a corpus path, in order, read in this process."""
    for part in iter_parts(corpus, language):
        yield from part_documents(part)


def _open_binary(path: Path):
    return bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb")


def _head(path: Path) -> bytes:
    try:
        with _open_binary(path) as f:
            return f.read(4096)
    except OSError as e:
        raise InputError(f"--train_corpus {path}: cannot read ({e})") from e
    except EOFError as e:
        raise InputError(f"--train_corpus {path}: truncated compressed stream ({e})") from e


def _sniffed(path: Path) -> tuple[str, int] | None:
    """(codec, byte-order mark length) of a dump; None for a file that is not XML."""
    encoding = sniff_encoding(_head(path))
    if encoding is None:
        if path.name.endswith((".xml", ".xml.bz2")):
            raise InputError(f"--train_corpus {path}: not an XML file (expected a MediaWiki dump)")
        return None
    try:
        return codecs.lookup(encoding[0]).name, encoding[1]
    except LookupError as e:
        raise InputError(f"--train_corpus {path}: its XML declaration names an unknown encoding {encoding[0]!r}") from e


def _file_parts(path: Path, language: str | None, read_threads: int) -> Iterator[Part]:
    encoding = _sniffed(path)
    if encoding is not None:
        yield from iter_dump_parts(path, *encoding, language, read_threads)
        return
    start = _head(path).lstrip()
    if start.startswith(b"<doc"):
        docs = _iter_wikiextractor_docs(path)
    elif start.startswith(b"{"):
        docs = _iter_wikiextractor_json(path)
    else:
        docs = _iter_plain_text(path)
    while batch := list(itertools.islice(docs, BATCH_DOCUMENTS)):
        yield DocumentBatch(batch)


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
