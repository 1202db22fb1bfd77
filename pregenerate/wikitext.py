"""Raw wikitext -> prose paragraphs.

Removed: templates, tables, references and other invisible tags, files and images, categories,
interlanguage links, HTML comments, headings, and lines that are not prose (list items, captions,
fragments: BERT's Wikipedia text ignores lists, tables and headers). Link text is kept.

Pages go through the regular-expression stripper (`fast_wikitext`, about 10x the parser's speed here); a page
whose brackets it cannot balance goes to mwparserfromhell instead, which reads every construct MediaWiki does.
Which links are not text depends on the wiki's language: `Site` carries the namespace names a dump declares.
"""
from __future__ import annotations

import dataclasses
import functools
import re

import mwparserfromhell
from mwparserfromhell.nodes import ExternalLink, HTMLEntity, Tag, Text, Wikilink

from .fast_wikitext import DROP_TAGS, strip_markup

# Namespace names MediaWiki accepts on every wiki whatever its language (canonical names and aliases), for the
# namespaces whose links are not running text: media, file, category, and the project's own pages.
CANONICAL_NON_TEXT = ("media", "file", "image", "category", "wikipedia", "wp", "project", "help", "portal",
                      "template", "special", "user", "talk", "module", "draft", "mediawiki", "book", "timedtext")
# Interlanguage and interwiki prefixes are not in a dump; language codes have this shape.
_LANGUAGE_PREFIX = r"[a-z]{2,3}(?:-[a-z]+)*"
# Disambiguation templates: English names, and the names a few large wikis use.
_DISAMBIGUATION = {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "numberdis",
                   "letter-numbercombdisambig", "school disambiguation", "hospital disambiguation",
                   "mountainindex", "roaddis", "shipindex", "surname", "given name", "set index article",
                   "begriffsklärung", "homonymie", "desambiguación", "desambiguação", "disambigua", "dp",
                   "ujednoznacznienie", "неоднозначность", "多義語", "消歧义", "förgreningssida", "täsmennyssivu",
                   "flertydig", "pagină de dezambiguizare", "anlam ayrımı", "rozcestník", "egyért"}
_DISAMBIGUATION_SWITCH = "__DISAMBIG__"
_DISAMBIGUATION_TITLE = re.compile(r"\((disambiguation|begriffsklärung|homonymie|desambiguación|desambiguação|"
                                   r"disambigua|значения)\)$", re.IGNORECASE)
_TEMPLATE_NAME = re.compile(r"\{\{\s*([^|}\n]+)")
_MIN_WORDS = 6
_STYLE_QUOTES = re.compile(r"'{2,}")
_SENTENCE_END = ".!?。！？"
_CLOSERS = "\"'”’»)]"
# What the stripper leaves where a page's brackets did not balance.
_DEBRIS = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||^\|\}", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Site:
    """What cleaning needs to know about the wiki a dump comes from (from its <siteinfo>)."""

    language: str = "en"
    namespace_names: tuple[str, ...] = ()  # every name and alias of the namespaces other than the main one

    @functools.cached_property
    def non_text_link(self) -> re.Pattern:
        names = {n.lower() for n in CANONICAL_NON_TEXT + self.namespace_names if n}
        alternatives = "|".join(re.escape(n).replace(r"\ ", "[ _]+") for n in sorted(names, key=len, reverse=True))
        return re.compile(rf"^\s*:?\s*(?:{alternatives}|{_LANGUAGE_PREFIX})\s*:", re.IGNORECASE)


ENGLISH = Site()


def is_disambiguation(title: str, wikitext: str) -> bool:
    """Disambiguation and set-index pages: by title, the __DISAMBIG__ switch, or a disambiguation template."""
    if _DISAMBIGUATION_TITLE.search(title) or _DISAMBIGUATION_SWITCH in wikitext:
        return True
    if "{{" not in wikitext:
        return False
    return any(name.strip().replace("_", " ").lower() in _DISAMBIGUATION for name in _TEMPLATE_NAME.findall(wikitext))


def wikitext_to_paragraphs(wikitext: str, site: Site = ENGLISH) -> list[str]:
    """Prose paragraphs of an article's wikitext, in page order."""
    text = strip_markup(wikitext, site.non_text_link)
    if _DEBRIS.search(text):
        return parsed_paragraphs(wikitext, site)
    return _prose_lines(text)


def parsed_paragraphs(wikitext: str, site: Site = ENGLISH) -> list[str]:
    """The same paragraphs through mwparserfromhell's full parse."""
    # Bold/italic parsing is the slowest part of the parser and carries no text: keep the quotes literal.
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    pieces: list[str] = []
    _emit_prose(code.nodes, pieces, site.non_text_link)
    return _prose_lines(_STYLE_QUOTES.sub("", "".join(pieces)))


def _prose_lines(text: str) -> list[str]:
    paragraphs = []
    for line in text.split("\n"):
        if len(line) > _MIN_WORDS * 2:  # cheaply past the many empty lines and remnants
            line = " ".join(line.split())
            if _is_prose(line):
                paragraphs.append(line)
    return paragraphs


def _emit_prose(nodes, out: list[str], non_text_link: re.Pattern) -> None:
    """One linear walk: text, link text and visible tag contents; nothing of the non-prose nodes."""
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Wikilink):
            if non_text_link.match(str(node.title)) is None:
                _emit_prose((node.text if node.text is not None else node.title).nodes, out, non_text_link)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _emit_prose(node.title.nodes, out, non_text_link)
        elif isinstance(node, Tag):
            if node.wiki_markup and node.wiki_markup[0] in "*#;:":
                out.append(node.wiki_markup)  # a list item: its marker keeps the line out of the prose
            if node.contents is not None and str(node.tag).strip().lower() not in DROP_TAGS:
                _emit_prose(node.contents.nodes, out, non_text_link)
        elif isinstance(node, HTMLEntity):
            out.append(node.normalize())
        # Templates, comments, headings, template arguments: nothing of them is running text.


def _is_prose(line: str) -> bool:
    """A paragraph of running text: enough words, ends like a sentence, not a list or table remnant."""
    if line.rstrip(_CLOSERS)[-1:] not in _SENTENCE_END or len(line.split()) < _MIN_WORDS:
        return False
    return not line.startswith(("*", "#", ";", ":", "|", "!", "{", "=", "<"))
