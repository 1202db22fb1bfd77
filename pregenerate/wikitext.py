"""Raw wikitext -> prose paragraphs, with a real wikitext parser (mwparserfromhell).

Removed: templates, tables, references and other invisible tags, files and images, categories,
interlanguage links, HTML comments, headings, and lines that are not prose (list items, captions,
fragments). Link text is kept.
"""
from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, HTMLEntity, Tag, Text, Wikilink

# Links to these namespaces are media, categories or metadata, not running text.
_NON_TEXT_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|wikipedia|wp|help|portal|template|special|"
                            r"[a-z]{2,3}(-[a-z]+)?)\s*:", re.IGNORECASE)
# Tags whose content is not prose even where the parser would keep it.
_DROP_TAGS = {"table", "gallery", "ref", "references", "math", "chem", "score", "timeline", "syntaxhighlight",
              "source", "pre", "code", "imagemap", "blockquote", "poem", "div", "noinclude", "includeonly"}
_DISAMBIGUATION = {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "numberdis",
                   "letter-numbercombdisambig", "school disambiguation", "hospital disambiguation",
                   "mountainindex", "roaddis", "shipindex", "surname", "given name", "set index article"}
_MIN_WORDS = 6
_STYLE_QUOTES = re.compile(r"'{2,}")
_SENTENCE_END = re.compile(r"""[.!?]["'”’)\]]*$""")


def is_disambiguation(title: str, wikitext: str) -> bool:
    """Disambiguation and set-index pages: by title, or by a disambiguation template anywhere on the page."""
    if title.endswith("(disambiguation)"):
        return True
    lowered = wikitext.lower()
    if "{{" not in lowered:
        return False
    for name in re.findall(r"\{\{\s*([^|}\n]+)", lowered):
        if name.strip().replace("_", " ") in _DISAMBIGUATION:
            return True
    return False


def wikitext_to_paragraphs(wikitext: str) -> list[str]:
    """Prose paragraphs of an article's wikitext, in page order."""
    # Bold/italic parsing is the slowest part of the parser and carries no text: keep the quotes literal.
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    pieces: list[str] = []
    _emit_prose(code.nodes, pieces)
    text = _STYLE_QUOTES.sub("", "".join(pieces))
    paragraphs = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if _is_prose(line):
            paragraphs.append(line)
    return paragraphs


def _emit_prose(nodes, out: list[str]) -> None:
    """One linear walk: text, link text and visible tag contents; nothing of the non-prose nodes."""
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            if _NON_TEXT_LINK.match(str(node.title)) is None:
                _emit_prose((node.text if node.text is not None else node.title).nodes, out)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _emit_prose(node.title.nodes, out)
        elif isinstance(node, Tag):
            if node.contents is not None and str(node.tag).strip().lower() not in _DROP_TAGS:
                _emit_prose(node.contents.nodes, out)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        # Templates, comments, headings, template arguments: nothing of them is running text.


def _is_prose(line: str) -> bool:
    """A paragraph of running text: enough words, ends like a sentence, not a list or table remnant."""
    if len(line.split()) < _MIN_WORDS or not _SENTENCE_END.search(line):
        return False
    return not line.startswith(("*", "#", ";", ":", "|", "!", "{", "=", "<"))
