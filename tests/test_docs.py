"""The documentation is the project's own: every stage page's flag table matches the stage's config, and every
document that the README, the docs, a comment or a generated text cites is in the repository."""
from __future__ import annotations

import re

from stagekit import docs
from stagekit.stages import STAGES

from .conftest import REPO

LIBRARY = ("stagekit", "modeling", "pregenerate", "decompose", "distill", "compress", "scripts", "configs",
           "benchmarks", "tests")
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# a document cited in code or prose: a page of docs/, or a capitalised name such as README.md or SOURCES.md
CITED_DOC = re.compile(r"(?<![\w./-])(docs/[\w./-]+\.md|[A-Z][A-Z_]+\.md)")


def test_every_stage_has_a_page_with_its_current_flags():
    for stage in STAGES:
        page = docs.page(stage)
        assert page.is_file(), f"no page for stage {stage}"
        text = page.read_text()
        assert docs.expected(stage, text) == text, f"{page}: flag table is stale (run `make docs`)"


def test_every_cited_document_exists():
    missing = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target in MARKDOWN_LINK.findall(path.read_text()):
            if not target.startswith(("http://", "https://")) and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(REPO)} links {target}")
    documents = {p.name for p in REPO.rglob("*.md") if ".venv" not in p.parts}
    for top in LIBRARY:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix not in (".py", ".md", ".sh", ".sbatch", ".yaml") or path.name == "test_docs.py":
                continue
            for target in CITED_DOC.findall(path.read_text()):
                if not ((REPO / target).is_file() if "/" in target else target in documents):
                    missing.append(f"{path.relative_to(REPO)} cites {target}")
    assert not missing, "\n".join(missing)
