"""The docs: a short README, a params reference in step with the schema, no dangling pointers,
every page in the site's navigation, and no stage that depends on the docs."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import params_reference  # noqa: E402

REGENERATE = "python scripts/params_reference.py"
POINTER_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".ipynb", ".cfg")
DOCS_PAGE = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.md(?:#[A-Za-z0-9_-]+)?")
README_SECTION = re.compile(r"\bREADME(?:\.md)?[,:]?\s+(?:section\s+)?[\"“]([^\"”]+)[\"”]")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def repo_files() -> list[Path]:
    """Files git tracks or would track (untracked but not ignored), else every file outside the usual noise."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        files = [ROOT / line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".venv-tunix", "data", "site", "submission", "__pycache__", ".dvc"}
        files = [p for p in ROOT.rglob("*") if not skip & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file()]


def headings(markdown: str) -> set[str]:
    return {line.lstrip("#").strip().strip("`") for line in markdown.splitlines() if line.startswith("#")}


def slug(heading: str) -> str:
    """The anchor mkdocs' toc gives a heading (lowercase, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"[^\w\s-]", "", heading.lower().replace("`", "")).strip()
    return re.sub(r"[\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in headings(page.read_text())}


# ---------------------------------------------------------------- README and params reference


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; keep it at 200 or fewer (depth goes in docs/)"


def test_readme_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make repro" in text and "make test" in text


def test_every_schema_key_has_a_description():
    try:
        params_reference.render()
    except ValueError as err:
        pytest.fail(f'{err}: add a "description" to each, then run {REGENERATE}')


def test_params_reference_is_in_step_with_the_schema():
    want = params_reference.render()
    have = (ROOT / "docs" / "params.md").read_text() if (ROOT / "docs" / "params.md").is_file() else ""
    assert have == want, f"docs/params.md is out of step with schemas/params.schema.json; run: {REGENERATE}"


def test_params_reference_lists_every_params_key():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    text = (ROOT / "docs" / "params.md").read_text()

    def keys(node, prefix):
        for name, value in node.items():
            dotted = f"{prefix}{name}"
            yield dotted
            if isinstance(value, dict) and not (prefix == "evaluate." and name == "sets") and name != "user_rewards":
                yield from keys(value, dotted + ".")

    missing = [k for k in keys(params, "") if f"`{k}`" not in text]
    assert not missing, f"docs/params.md lacks {missing}; run: {REGENERATE}"


# ---------------------------------------------------------------- pointers into the docs


def pointer_sources() -> list[Path]:
    here = Path(__file__).resolve()  # its own examples of dangling pointers do not count
    return [p for p in repo_files() if p.suffix in POINTER_SUFFIXES and p.resolve() != here]


def test_pointers_to_docs_pages_resolve():
    dangling = []
    for path in pointer_sources():
        text = path.read_text(errors="replace")
        for match in DOCS_PAGE.finditer(text):
            page, _, anchor = match.group(0).partition("#")
            target = ROOT / page
            if not target.is_file():
                dangling.append(f"{path.relative_to(ROOT)}: {match.group(0)} (no such page)")
            elif anchor and anchor not in anchors(target):
                dangling.append(f"{path.relative_to(ROOT)}: {match.group(0)} (no such heading)")
    assert not dangling, "dangling pointers into docs/:\n" + "\n".join(dangling)


def test_pointers_to_readme_sections_resolve():
    readme = headings((ROOT / "README.md").read_text())
    dangling = []
    for path in pointer_sources():
        for match in README_SECTION.finditer(path.read_text(errors="replace")):
            section = match.group(1)
            if not any(h == section or h.startswith(section) for h in readme):
                dangling.append(f"{path.relative_to(ROOT)}: README {section!r} (no such section)")
    assert not dangling, "pointers to README sections that do not exist (point at a docs page):\n" + "\n".join(dangling)


def test_pointer_patterns_catch_a_dangling_one():
    assert DOCS_PAGE.findall("see docs/nowhere.md#part, and docs/results/x.md") == [
        "docs/nowhere.md#part",
        "docs/results/x.md",
    ]
    assert README_SECTION.findall('(README "Benchmarks") and (README, "What the score is bought with")') == [
        "Benchmarks",
        "What the score is bought with",
    ]


def test_markdown_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for match in MD_LINK.finditer(page.read_text()):
            link = match.group(1)
            if re.match(r"^[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            resolved = (page.parent / target).resolve() if target else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


# ---------------------------------------------------------------- the site


def nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert not [p for p in nav if not (ROOT / "docs" / p).is_file()], "mkdocs.yml names pages that do not exist"
    assert not [p for p in pages if p not in nav], "pages missing from mkdocs.yml's nav"


def test_results_pages_are_dated_and_headed():
    for page in sorted((ROOT / "docs" / "results").glob("20*.md")):
        assert re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md$", page.name), page.name
        text = page.read_text()
        if len(text.splitlines()) < 5 and "Written with the" in text:
            continue  # a placeholder for a page another issue writes
        assert "| date | commit | machine |" in text, f"{page.name}: no date / commit / machine header"


# ---------------------------------------------------------------- the pipeline ignores the docs


def test_no_stage_depends_on_the_docs():
    """A docs edit leaves `dvc status` clean: no dep of any stage is, or contains, README.md, docs/ or mkdocs.yml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    docs = ("README.md", "docs/index.md", "docs/results/index.md", "mkdocs.yml", "LICENSE")
    bad = []
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            dep = str(dep).rstrip("/")
            for doc in docs:
                if dep in (".", "") or doc == dep or doc.startswith(dep + "/"):
                    bad.append(f"{name}: {dep} (holds {doc})")
    assert not bad, "stages that a docs edit would make stale:\n" + "\n".join(bad)


def test_package_does_not_read_the_readme():
    source = (ROOT / "stages" / "package.py").read_text()
    assert '"README.md"' not in source and "docs/" not in source.replace("no README.md or docs/", "")


# ---------------------------------------------------------------- code comments say why


MEASURED = re.compile(
    r"EPYC|Xeon|H200|H100|A100|\bthis machine\b|\brelease\b|README"
    r"|\b\d+(?:\.\d+)?x (?:faster|slower)|[+~]\d+(?:\.\d+)?(?:-\d+)? ?%|\b\d+(?:\.\d+)?-?\d*x\b"
)


def comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    out = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc and node.body:
                out.append((node.body[0].lineno, doc))
    return out


def test_training_comments_name_no_machine_or_measured_ratio():
    """Figures measured on one machine or run belong in docs/results/; the code keeps the mechanism."""
    found = []
    for path in sorted((ROOT / "training").glob("*.py")):
        for line, text in comments_and_docstrings(path.read_text()):
            for match in MEASURED.finditer(text):
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not found, "move these to a docs/results/ page:\n" + "\n".join(found)
