"""MediaWiki XML dumps as parts that worker processes parse on their own.

A dump is read in any encoding that its byte-order mark or XML declaration states (decoded strictly: bytes that
contradict the declaration are an error). Its <siteinfo> gives the wiki's language and namespace names (so file,
category and interlanguage links are recognised in any language); a dump without one is read as English.

The pages are cut into parts of about `PART_CHARACTERS` at `</page>` boundaries (character data never holds a
literal `</page>`: XML escapes its `<`), and every part is parsed where it is cleaned, in a worker:
- a multistream dump (Wikimedia's `-multistream.xml.bz2`: independent bz2 streams of 100 pages) is cut by its
  stream offsets, found by scanning for stream headers and checked against the `-index.txt.bz2` beside it where
  there is one; each worker decompresses, decodes and parses its own streams, from the first byte;
- a single-stream `.bz2` is decompressed by indexed_bzip2, which splits it at bz2 block boundaries and decodes
  the blocks on `read_threads` threads, as parallel bzip2 tools do; the reader only cuts the text into parts;
- plain `.xml` is read as it is.
Parts depend on the dump alone, never on the worker count, and documents keep the dump's order.
"""
from __future__ import annotations

import bz2
import codecs
import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from stagekit.bz2streams import STREAM_START, first_stream_end
from stagekit.errors import InputError

from .wikitext import Site

PART_CHARACTERS = 1 << 20
_READ_BYTES = 1 << 20
_STREAM_GROUP_BYTES = 1 << 18  # compressed bytes of multistream streams per part (about 1 MB of XML)
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Without a byte-order mark, the first characters "<?" tell the width and order of the code units (XML 1.0,
# appendix F).
_UNMARKED = ((b"<\x00\x00\x00", "utf-32-le"), (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00?\x00", "utf-16-le"),
             (b"\x00<\x00?", "utf-16-be"))
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_ROOT = re.compile(r"<([A-Za-z_][\w.:-]*)")  # the first element (declarations start with <? or <!)
_END = re.compile(r"\s*</mediawiki>\s*")
# The usual aliases of the file namespace that a dump's <siteinfo> does not list.
_FILE_ALIASES = {"de": ("Bild",), "fr": ("Image",), "es": ("Imagen", "Archivo"), "it": ("Immagine",),
                 "nl": ("Afbeelding",), "pt": ("Imagem", "Arquivo"), "pl": ("Grafika", "Plik"), "sv": ("Bild",),
                 "ru": ("Изображение",), "uk": ("Зображення",), "ja": ("画像",), "zh": ("图像", "圖像")}


@dataclasses.dataclass
class RawPage:
    """A main-namespace article: its title and wikitext (parsing stops here; cleaning is the workers')."""

    title: str
    text: str


def sniff_encoding(head: bytes) -> tuple[str, int] | None:
    """(Python codec, length of the byte-order mark) of an XML document's first bytes; None if they do not start
    an XML document."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name, len(bom)
    for start, name in _UNMARKED:
        if head.startswith(start):
            return name, 0
    stripped = head.lstrip()
    if not (stripped.startswith(b"<?xml") or stripped.startswith(b"<mediawiki")):
        return None
    declared = _DECLARED.match(head)
    return (declared.group(1).decode("ascii") if declared else "utf-8"), 0


@dataclasses.dataclass
class PageChunk:
    """Whole <page> elements of a dump, as text."""

    path: str
    site: Site
    start: int  # character offset of the chunk in the dump's text, for error messages
    xml: str

    def pages(self) -> list[RawPage]:
        return _parse_pages(self.path, self.xml, f"character {self.start:,}")


@dataclasses.dataclass
class StreamRange:
    """Consecutive bz2 streams of a multistream dump, [start, stop) in compressed bytes; `last` may end the dump."""

    path: str
    site: Site
    start: int
    stop: int
    last: bool

    def pages(self) -> list[RawPage]:
        where = f"the streams at bytes {self.start:,}-{self.stop:,}"
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = f.read(self.stop - self.start)
        try:
            text = bz2.decompress(data).decode("utf-8")
        except (OSError, EOFError, ValueError) as e:
            raise InputError(f"--train_corpus {self.path}: corrupt or truncated bz2 in {where} ({e})") from e
        body, tail = _split_tail(text)
        if tail and not (self.last and _END.fullmatch(tail)):
            raise InputError(f"--train_corpus {self.path}: {where} do not end with a whole page")
        return _parse_pages(self.path, body, where)


def _split_tail(text: str) -> tuple[str, str]:
    cut = text.rfind("</page>")
    cut = 0 if cut < 0 else cut + len("</page>")
    return text[:cut], text[cut:].strip()


def _parse_pages(path: str, xml: str, where: str) -> list[RawPage]:
    try:
        root = ET.fromstring(f"<pages>{xml}</pages>")
    except ET.ParseError as e:
        raise InputError(f"--train_corpus {path}: malformed XML in the pages from {where} ({e})") from e
    return [page for el in root if _local(el.tag) == "page" and (page := _article(el)) is not None]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _article(page: ET.Element) -> RawPage | None:
    """Main namespace only; redirects by the dump's own <redirect> marker, or the magic word for old dumps."""
    fields = {_local(child.tag): child for child in page}
    ns, title, revision = fields.get("ns"), fields.get("title"), fields.get("revision")
    if ns is None or (ns.text or "").strip() != "0" or "redirect" in fields or revision is None:
        return None
    text_el = next((c for c in revision if _local(c.tag) == "text"), None)
    text = text_el.text if text_el is not None else None
    if not text or text.lstrip()[:9].upper() == "#REDIRECT":
        return None
    return RawPage((title.text or "") if title is not None else "", text)


def _check_root(path: str, text: str) -> None:
    root = _ROOT.search(text)
    if root is not None and _local(root.group(1)) != "mediawiki":
        raise InputError(f"--train_corpus {path}: XML root is <{_local(root.group(1))}>, not a MediaWiki dump")


def read_site(path: str, header: str, language: str | None) -> Site:
    """The wiki's language and namespace names from the dump's header (everything before its first <page>)."""
    _check_root(path, header)
    try:
        root = ET.fromstring(_DECLARATION.sub("", header, count=1) + "</mediawiki>")
    except ET.ParseError as e:
        raise InputError(f"--train_corpus {path}: malformed XML before the first page ({e})") from e
    info = next((el for el in root if _local(el.tag) == "siteinfo"), None)
    if info is None:
        return Site(language=language or "en")
    fields = {_local(el.tag): el for el in info}
    names = []
    namespaces = fields.get("namespaces")
    for ns in namespaces if namespaces is not None else ():
        if ns.get("key") not in (None, "0") and (ns.text or "").strip():
            names.append(ns.text.strip())
    site_language = language or _language(fields) or "en"
    return Site(language=site_language, namespace_names=tuple(names) + _FILE_ALIASES.get(site_language, ()))


def _language(fields: dict[str, ET.Element]) -> str | None:
    """From the wiki's address (https://de.wikipedia.org/...), else its database name (dewiki)."""
    base = fields.get("base")
    host = urlparse((base.text or "").strip()).hostname if base is not None else None
    if host and host.count(".") >= 2:
        return host.split(".")[0]
    db = fields.get("dbname")
    m = re.fullmatch(r"([a-z_]+?)wiki", (db.text or "").strip()) if db is not None else None
    return m.group(1).replace("_", "-") if m else None


def dump_site(path: Path, encoding: str, bom: int) -> Site:
    """The site of a dump, from its header alone."""
    head = ""
    with bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb") as f:
        f.read(bom)
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        while (block := f.read(1 << 16)) and "<page" not in head and len(head) < PART_CHARACTERS:
            head += decoder.decode(block)
    first = head.find("<page")
    return read_site(str(path), head[:first] if first >= 0 else _END.sub("", head), None)


def iter_dump_parts(path: Path, encoding: str, bom: int, language: str | None, read_threads: int,
                    dump_slice: tuple[int, int] | None = None) -> Iterator[PageChunk | StreamRange]:
    """The parts of a dump, in order (see the module's docstring); with `dump_slice` (i, n), only the i-th of n
    slices of a multistream dump (the tasks of a job array)."""
    streams = _multistream_offsets(path) if path.suffix == ".bz2" else None
    if streams is not None:
        yield from _stream_parts(path, streams, encoding, language, dump_slice)
    elif dump_slice is not None:
        raise InputError(f"--dump_parts {dump_slice[1]}: {path} is not a multistream dump (one bz2 stream); "
                         "split it into files and pass their directory instead")
    else:
        yield from _text_parts(path, _decoded(path, encoding, bom, read_threads), language)


def _text_parts(path: Path, texts: Iterator[str], language: str | None, final: bool = True) -> Iterator[PageChunk]:
    """Cut decoded dump text into page chunks; the header before the first <page> gives the site."""
    name, buf, consumed, site = str(path), "", 0, None
    for text in texts:
        buf += text
        if site is None:
            _check_root(name, buf)
            first = buf.find("<page")
            if first < 0:
                if len(buf) > PART_CHARACTERS:  # a <siteinfo> is a few kilobytes
                    raise InputError(f"--train_corpus {name}: no <page> in its first {PART_CHARACTERS:,} "
                                     "characters: not a MediaWiki dump")
                continue
            site = read_site(name, buf[:first], language)
            consumed, buf = first, buf[first:]
        if len(buf) >= PART_CHARACTERS:
            cut = buf.rfind("</page>")
            if cut > 0:
                cut += len("</page>")
                yield PageChunk(name, site, consumed, buf[:cut])
                consumed, buf = consumed + cut, buf[cut:]
    if site is None:  # no page at all: the header must still be a dump's
        read_site(name, _END.sub("", buf), language)
        return
    body, tail = _split_tail(buf)
    if final and not _END.fullmatch(tail):
        raise InputError(f"--train_corpus {name}: the dump ends inside a page or without </mediawiki> "
                         "(malformed XML: truncated?)")
    if body:
        yield PageChunk(name, site, consumed, body)


def _decoded(path: Path, encoding: str, bom: int, read_threads: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    position = 0
    try:
        with _open_raw(path, read_threads) as f:
            f.read(bom)
            position = bom
            while block := f.read(_READ_BYTES):
                yield decoder.decode(block)
                position += len(block)
            yield decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        raise InputError(f"--train_corpus {path}: bytes at {position + e.start:,} are not {encoding}, "
                         f"the encoding its XML declaration states ({e.reason})") from e
    except (RuntimeError, ValueError, OSError, EOFError) as e:
        raise InputError(f"--train_corpus {path}: {_bz2_fault(path) if path.suffix == '.bz2' else e}") from e


def _open_raw(path: Path, read_threads: int):
    if path.suffix != ".bz2":
        return open(path, "rb")
    import indexed_bzip2

    return indexed_bzip2.open(str(path), parallelization=max(1, read_threads))


def _bz2_fault(path: Path) -> str:
    """What is wrong with a bz2 file that indexed_bzip2 could not read, in the standard library's words (its own
    messages do not tell a truncated file from a corrupt one)."""
    try:
        with bz2.open(path, "rb") as f:
            while f.read(_READ_BYTES):
                pass
    except EOFError as e:
        return f"truncated compressed stream ({e})"
    except OSError as e:
        return f"corrupt compressed stream ({e})"
    return "corrupt compressed stream"


def _multistream_offsets(path: Path) -> list[int] | None:
    """Start offsets of every bz2 stream (and the file size last) of a multistream dump; None for one stream."""
    first_end = first_stream_end(path)
    if first_end is None:
        return None
    offsets = [0, first_end]
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(first_end)
        carry, position = b"", first_end
        while block := f.read(1 << 24):
            window = carry + block
            base = position - len(carry)
            offsets.extend(base + m.start() for m in STREAM_START.finditer(window) if base + m.start() > offsets[-1])
            carry, position = window[-9:], position + len(block)
    _check_index(path, set(offsets))
    return offsets + [size]


def _check_index(path: Path, offsets: set[int]) -> None:
    """The `-index.txt.bz2` beside a multistream dump lists `offset:page id:title` lines; every offset must start
    a stream of this dump."""
    if not path.name.endswith("-multistream.xml.bz2"):
        return
    index = path.with_name(path.name.replace(".xml.bz2", "-index.txt.bz2"))
    if not index.is_file():
        return
    try:
        with bz2.open(index, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                offset = int(line.split(":", 1)[0])
                if offset not in offsets:
                    raise InputError(f"--train_corpus {path}: multistream index {index.name} does not match it "
                                     f"(line {number}: no stream starts at byte {offset:,})")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"--train_corpus {path}: unreadable multistream index {index.name} ({e})") from e


def _stream_parts(path: Path, offsets: list[int], encoding: str, language: str | None,
                  dump_slice: tuple[int, int] | None) -> Iterator[PageChunk | StreamRange]:
    if codecs.lookup(encoding).name != "utf-8":
        raise InputError(f"--train_corpus {path}: a multistream dump must be UTF-8 (its declaration says {encoding})")
    with open(path, "rb") as f:
        head = bz2.decompress(f.read(offsets[1])).decode("utf-8-sig")
    # The first stream holds the header (Wikimedia's hold nothing else); pages in it are read here.
    first = head.find("<page")
    site = read_site(str(path), head if first < 0 else head[:first], language)
    ranges, starts, end = [], offsets[1:-1], offsets[-1]
    group_start = starts[0] if starts else end
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else end
        if stop - group_start >= _STREAM_GROUP_BYTES or stop == end:
            ranges.append(StreamRange(str(path), site, group_start, stop, last=stop == end))
            group_start = stop
    if dump_slice is not None:
        index, count = dump_slice
        # Contiguous slices of about equal compressed size; the first also reads the header stream's pages.
        bounds = [offsets[1] + (end - offsets[1]) * k // count for k in range(count + 1)]
        ranges = [r for r in ranges if bounds[index] <= r.start < bounds[index + 1]]
        if index != 0:
            yield from ranges
            return
    yield from _text_parts(path, iter([head]), language, final=False)
    yield from ranges
