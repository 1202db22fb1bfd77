"""Twins of the shipped English dump, made from its real pages: the same pages in another encoding, as a
multistream file with its index, and as a German-language dump (German namespace names in <siteinfo> and in the
links). Used by the tests and by benchmarks/pregenerate.py."""
from __future__ import annotations

import bz2
import re
from pathlib import Path

GERMAN_NAMESPACES = {"Media": "Medium", "Special": "Spezial", "Talk": "Diskussion", "User": "Benutzer",
                     "File": "Datei", "Template": "Vorlage", "Help": "Hilfe", "Category": "Kategorie",
                     "Portal": "Portal", "Wikipedia": "Wikipedia"}


def dump_text(dump: Path) -> str:
    return bz2.decompress(dump.read_bytes()).decode("utf-8")


def split_dump(xml: str) -> tuple[str, list[str], str]:
    """(header before the first <page>, every <page>...</page>, what follows the last page)."""
    first, last = xml.index("<page>"), xml.rindex("</page>") + len("</page>")
    pages = re.findall(r"<page>.*?</page>", xml[first:last], flags=re.DOTALL)
    return xml[:first], pages, xml[last:]


def reencoded(dump: Path, out: Path, encoding: str, bom: bytes = b"") -> Path:
    """The dump in `encoding`, with an XML declaration that says so (and a byte-order mark if given)."""
    xml = re.sub(r"^<\?xml[^>]*\?>\s*", "", dump_text(dump))
    out.write_bytes(bz2.compress(bom + f'<?xml version="1.0" encoding="{encoding}"?>\n{xml}'.encode(encoding)))
    return out


def multistream(dump: Path, out: Path, pages_per_stream: int = 10) -> Path:
    """Wikimedia's layout: a stream for the header, streams of `pages_per_stream` pages, a stream for the end;
    and `<name>-index.txt.bz2` beside it with `offset:page id:title` for every page."""
    header, pages, end = split_dump(dump_text(dump))
    streams = [header] + ["\n  ".join(pages[i:i + pages_per_stream]) + "\n  "
                          for i in range(0, len(pages), pages_per_stream)] + [end]
    index, offset = [], 0
    with open(out, "wb") as f:
        for i, stream in enumerate(streams):
            data = bz2.compress(stream.encode("utf-8"))
            if 0 < i < len(streams) - 1:
                for page in re.findall(r"<page>.*?</page>", stream, flags=re.DOTALL):
                    page_id = re.search(r"<id>(\d+)</id>", page).group(1)
                    title = re.search(r"<title>(.*?)</title>", page).group(1)
                    index.append(f"{offset}:{page_id}:{title}\n")
            f.write(data)
            offset += len(data)
    out.with_name(out.name.replace(".xml.bz2", "-index.txt.bz2")).write_bytes(bz2.compress("".join(index).encode()))
    return out


def german(dump: Path, out: Path) -> Path:
    """The dump's pages as a German wiki's: <siteinfo> in German, and every link to a file, image or category
    written with its German name (Datei:, Bild:, Kategorie:)."""
    xml = dump_text(dump)
    header, pages, end = split_dump(xml)
    for english, local in GERMAN_NAMESPACES.items():
        header = header.replace(f">{english}<", f">{local}<").replace(f">{english} talk<", f">{local} Diskussion<")
    header = header.replace("enwiki", "dewiki").replace("en.wikipedia.org", "de.wikipedia.org")
    body = "".join(pages)
    for english, local in (("File", "Datei"), ("Image", "Bild"), ("Category", "Kategorie")):
        body = re.sub(rf"\[\[(\s*:?\s*){english}\s*:", rf"[[\1{local}:", body, flags=re.IGNORECASE)
    out.write_bytes(bz2.compress((header + body + end).encode("utf-8")))
    return out
