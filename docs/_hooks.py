"""MkDocs hook: a page's link to a repository file outside docs/ (`../bench/RESULTS.md`) works on the site as well.

In the repository (GitHub, an editor) such a link is a plain relative path and needs nothing. For the site, each
Markdown file outside docs/ that a page links to is added as a generated page under `repo/` and the link is rewritten
to it. A link to a file that does not exist is left alone, so `mkdocs build --strict` fails on it like on any other
broken link. Written by hand because plain MkDocs only publishes what is under docs_dir.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

LINK = re.compile(r"\]\((\.\./[^)#\s]+\.md)(#[^)\s]*)?\)")


def _repo_uri(page_src: Path, link: str, root: Path, docs: Path) -> str | None:
    target = (page_src.parent / link).resolve()
    if not target.is_file() or root not in target.parents or docs in target.parents:
        return None
    return "repo/" + target.relative_to(root).as_posix()


def on_files(files, config):
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    for md in sorted(docs.rglob("*.md")):
        for m in LINK.finditer(md.read_text(encoding="utf-8")):
            uri = _repo_uri(md, m.group(1), root, docs)
            if uri and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(root / uri[len("repo/"):]),
                                            inclusion=InclusionLevel.NOT_IN_NAV))  # reached by its links
    return files


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    src = Path(page.file.abs_src_path)
    if docs not in src.parents:  # a generated repo/ page: its own links stay as written
        return markdown

    def rewrite(m: re.Match) -> str:
        uri = _repo_uri(src, m.group(1), docs.parent, docs)
        if uri is None:
            return m.group(0)
        rel = posixpath.relpath(uri, posixpath.dirname(page.file.src_uri) or ".")
        return f"]({rel}{m.group(2) or ''})"

    return LINK.sub(rewrite, markdown)
