"""Raw wikitext -> prose paragraphs in a few regular-expression passes, without building a parse tree.

It removes what `wikitext.parsed_paragraphs` removes (templates, tables, references and other non-prose tags,
comments, file/category/interlanguage links, style quotes) and keeps link text, but works on the string:
templates and tables are cut by one scan over their brackets with a depth counter, links are replaced innermost
first (a file caption may hold links), and the remaining tags are dropped. Where a page's brackets do not
balance, the stripper leaves debris that the parser would not; `wikitext.wikitext_to_paragraphs` then gives that
page to the parser.
"""
from __future__ import annotations

import html
import re

# Tags whose whole content is not prose, even where MediaWiki shows it. The content of the first group is not
# wikitext (LaTeX, code) and may hold stray braces, so it goes before the braces are counted; the second group
# may nest (a <div> in a <div>) and goes innermost first.
VERBATIM_TAGS = ("math", "chem", "score", "timeline", "syntaxhighlight", "source", "pre", "code", "imagemap")
NESTING_TAGS = ("table", "gallery", "ref", "references", "blockquote", "poem", "div", "noinclude", "includeonly")
DROP_TAGS = VERBATIM_TAGS + NESTING_TAGS
_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_VERBATIM_TAG = re.compile(r"<(%s)\b[^>]*?(?:/>|>.*?</\1\s*>)" % "|".join(VERBATIM_TAGS), re.DOTALL | re.IGNORECASE)
_INNERMOST_TAG = re.compile(r"<(%s)\b[^>]*?(?:/>|>(?:(?!<\1\b).)*?</\1\s*>)" % "|".join(NESTING_TAGS),
                            re.DOTALL | re.IGNORECASE)
# Template braces anywhere; table braces only where MediaWiki sees them, at the start of a line (a newline in the
# pattern rather than ^ with MULTILINE: three times faster here).
_BRACKET = re.compile(r"\{\{|\}\}|\n[ \t]*\{\||\n[ \t]*\|\}")
# Link text may hold single brackets ("Bicyclo[1.1.0]butane") but no link.
_INNER_LINK = re.compile(r"\[\[([^\[\]|\n]*)(?:\|((?:[^\[\]]|\[[^\[\]]*\])*))?\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*(?:\s+([^\]\n]*))?\]", re.IGNORECASE)
_BARE_URL = re.compile(r"(?:https?|ftp)://\S+")
_TAG = re.compile(r"</?[a-zA-Z][^<>\n]*>")
_SWITCH = re.compile(r"__[A-Z]+__")
_STYLE_QUOTES = re.compile(r"'{2,}")


def strip_templates_and_tables(text: str) -> str:
    """Cut every {{...}} and {|...|} span, nested ones with their parents; an opening without its closing is
    kept as text."""
    text = "\n" + text  # the first line may open a table too
    pieces, depth, kept_from, opened_at = [], 0, 0, 0
    for m in _BRACKET.finditer(text):
        bracket = m.group().lstrip("\n \t")
        if bracket in ("{{", "{|"):
            if depth == 0:
                opened_at = m.start() + (m.group()[0] == "\n")  # the line break stays
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0:
                pieces.append(text[kept_from:opened_at])
                kept_from = m.end()
    pieces.append(text[kept_from:])
    return "".join(pieces)[1:]


def strip_markup(wikitext: str, non_text_link: re.Pattern) -> str:
    """The page's visible running text, lines as in the source."""
    text = _COMMENT.sub("", wikitext)
    text = _VERBATIM_TAG.sub("", text)
    text = strip_templates_and_tables(text)
    while True:
        text, n = _INNERMOST_TAG.subn("", text)
        if n == 0:
            break

    def link(m: re.Match) -> str:
        if non_text_link.match(m.group(1)):
            return ""
        return m.group(2) if m.group(2) is not None else m.group(1)

    while True:  # innermost links first: a file's caption links vanish with the file on the next pass
        text, n = _INNER_LINK.subn(link, text)
        if n == 0:
            break
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or "", text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = _SWITCH.sub("", text)
    text = _STYLE_QUOTES.sub("", text)
    return html.unescape(text)
