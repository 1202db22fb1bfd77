"""Builds the shipped English -> German parallel corpus (data/parallel/gettext-en-de) from the gettext message
catalogs a Debian system installs: every package's German `.mo` file holds its translators' German for each English
message. Run it on a Debian system with the packages installed (it asks dpkg which package owns each catalog and
reads that package's licence from /usr/share/doc/<package>/copyright):

    .venv/bin/python scripts/build_gettext_corpus.py [--locale_dir /usr/share/locale/de/LC_MESSAGES]
        [--output_dir data/parallel/gettext-en-de] [--overwrite]

What it keeps: a message's singular form (a plural entry's first German form), translated and not a copy of its
source, with at least one word of two letters once format directives (%s, %1$d, {0}, ${var}) are taken out (a
message that is only directives and punctuation teaches nothing); each (source, target) pair once, the first package
in name order keeping it. Split by Debian package, so that dev and test hold messages of programs the model never saw
in training: packages are ordered by a hash of their name and dealt to test, then dev, until each holds about
`--held_out_share` of the pairs (a package larger than that stays in train); a dev or test pair whose English source
is also in train is dropped. Text keeps its newlines and tabs, escaped in the TSV as \\n and \\t (\\\\ for a
backslash), the escaping `corpora.text_pairs` undoes.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from babel.messages.mofile import read_mo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from corpora.text_pairs import escape  # noqa: E402  (the reader's own escaping, so both agree)

DIRECTIVE = re.compile(r"%(\d+\$)?[-+ #0']*(\*|\d+)?(\.(\*|\d+))?(hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfFgGaAcspnm%]"
                       r"|\{[^{}]*\}|\$\{[^{}]*\}|<[^<>]*>")
WORD = re.compile(r"[^\W\d_]{2,}")


def owner(path: Path) -> tuple[str, str]:
    """The Debian package that installed `path`, and its version."""
    package = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True, check=True).stdout
    package = package.split(":")[0].strip()
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                             check=True).stdout.strip()
    return package, version


def licence(package: str) -> str:
    """The licence of the package's own files: `Files: *` of a machine-readable copyright file (its first licence
    otherwise); a free-text one is not guessed at (the file is shipped beside the corpus)."""
    path = Path("/usr/share/doc") / package / "copyright"
    if not path.is_file():
        return "unknown (no copyright file)"
    text = path.read_text(errors="replace")
    if text.startswith("Format:"):
        for block in re.split(r"\n\s*\n", text):
            if re.search(r"^Files:\s*\*\s*$", block, re.M) and (found := re.search(r"^License:\s*(\S.*)$", block, re.M)):
                return found.group(1).strip()
        if found := re.search(r"^License:\s*(\S.*)$", text, re.M):
            return found.group(1).strip()
    return "free-text copyright file: see copyright/" + package


def pairs_of(mo: Path) -> list[tuple[str, str]]:
    """The kept (English, German) pairs of one catalog, in its order."""
    with mo.open("rb") as f:
        catalog = read_mo(f)
    kept = []
    for message in catalog:
        source = message.id[0] if isinstance(message.id, (tuple, list)) else message.id
        target = message.string[0] if isinstance(message.string, (tuple, list)) else message.string
        if not source or not target or source.strip() == target.strip():
            continue
        if not WORD.search(DIRECTIVE.sub(" ", source)):
            continue
        kept.append((source, target))
    return kept


def split(by_package: dict[str, list], share: float) -> dict[str, str]:
    """Package -> train / dev / test, dealt in the order of a hash of the package's name."""
    total = sum(map(len, by_package.values()))
    order = sorted(by_package, key=lambda p: hashlib.blake2b(p.encode(), digest_size=8).hexdigest())
    where, filled = {}, Counter()
    for package in order:
        size = len(by_package[package])
        for part in ("test", "dev"):
            if filled[part] < share * total and size <= share * total:
                where[package] = part
                filled[part] += size
                break
        else:
            where[package] = "train"
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--locale_dir", default="/usr/share/locale/de/LC_MESSAGES")
    ap.add_argument("--output_dir", default=str(REPO / "data/parallel/gettext-en-de"))
    ap.add_argument("--held_out_share", type=float, default=0.08, help="about this share of the pairs in dev and test each")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    out = Path(args.output_dir)
    if out.exists() and not args.overwrite:
        raise SystemExit(f"--output_dir {out}: exists; pass --overwrite to replace it")
    catalogs = sorted(Path(args.locale_dir).glob("*.mo"))
    if not catalogs:
        raise SystemExit(f"--locale_dir {args.locale_dir}: no .mo catalogs")

    by_package: dict[str, list[tuple[str, str]]] = defaultdict(list)
    info: dict[str, dict] = {}
    seen: set[tuple[str, str]] = set()
    raw, skipped = 0, []
    for mo in catalogs:
        try:
            kept = pairs_of(mo)
        except UnicodeDecodeError as e:  # m4's and net-tools' hold Latin-1 bytes under a UTF-8 header
            skipped.append(f"{mo.name} ({e.reason} at byte {e.start}: not the charset its header declares)")
            continue
        package, version = owner(mo)
        entry = info.setdefault(package, {"version": version, "licence": licence(package), "domains": []})
        entry["domains"].append(mo.stem)
        for pair in kept:
            raw += 1
            if pair not in seen:
                seen.add(pair)
                by_package[package].append(pair)
    where = split(by_package, args.held_out_share)
    train_sources = {s for p, rows in by_package.items() if where[p] == "train" for s, _ in rows}
    rows: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    counts: dict[str, int] = Counter()
    for package in sorted(by_package):
        part = where[package]
        for source, target in by_package[package]:
            if part != "train" and source in train_sources:
                continue
            rows[part].append(f"{escape(source)}\t{escape(target)}\t{package}")
            counts[package] += 1

    out.mkdir(parents=True, exist_ok=True)
    (out / "copyright").mkdir(exist_ok=True)
    for package in info:
        source = Path("/usr/share/doc") / package / "copyright"
        if source.is_file():
            shutil.copyfile(source, out / "copyright" / package)
    for part, lines in rows.items():
        (out / f"{part}.tsv").write_text("source\ttarget\tpackage\n" + "".join(line + "\n" for line in lines))
    table = "\n".join(f"| {p} | {info[p]['version']} | {', '.join(info[p]['domains'])} | {info[p]['licence']} | "
                      f"{where.get(p, '-')} | {counts[p]} |" for p in sorted(info))
    (out / "SOURCES.md").write_text(
        "# English -> German pairs from Debian's gettext catalogs\n\n"
        f"Built by `scripts/build_gettext_corpus.py` from the {len(catalogs)} German catalogs in `{args.locale_dir}` "
        f"of a Debian 12 system: {raw:,} translated messages with words, {len(seen):,} distinct pairs; "
        f"train {len(rows['train']):,}, dev {len(rows['dev']):,}, test {len(rows['test']):,} "
        "(split by package; held-out pairs whose English is in train dropped). Each translation is its package's "
        "work, under the package's licence; each package's Debian copyright file is in `copyright/`.\n\n"
        "| package | version | catalogs | licence | split | pairs |\n|---|---|---|---|---|---|\n" + table + "\n"
        + (f"\nLeft out, unreadable: {'; '.join(skipped)}.\n" if skipped else ""))
    print(f"{out}: train {len(rows['train'])}, dev {len(rows['dev'])}, test {len(rows['test'])} pairs from "
          f"{len(info)} packages")


if __name__ == "__main__":
    main()
