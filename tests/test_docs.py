"""The docs: the README's first screen, the MkDocs site built with --strict, every fenced code block of
the README and docs/*.md run or marked with the reason it is not, and the layout page naming every
library file.

A block is classified by its language and by an HTML comment on the line before it:
  yaml    a kdx config, checked by kdx's loader (what `kdx validate` runs);
          `<!-- fragment -->`: part of a config, checked by the run-config parser alone (no files)
  python  executed in a temporary folder
  bash    run when every command is cheap (`kdx validate ...`, `kdx --help`, `kdx <command> --help`)
  text    output, not run
  `<!-- no-test: REASON -->`  not run, for the reason given
  `<!-- slow-test -->`        run by the slow suite (make test-slow): commands that take minutes
Anything else fails here, so every new snippet is either run or says why not.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from search_helpers import ROOT, env_for

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LIBRARY = ("distill", "search_spaces", "workflows", "analysis", "scripts")
README_MAX_LINES = 160
FIRST_SCREEN = 40
BIN = Path(sys.executable).parent  # the venv's bin: its kdx and mkdocs
MARKERS = {"no-test", "slow-test", "fragment", "demo-output"}
KDX_COMMANDS = {"run", "search", "validate", "teacher", "report", "export", "ui"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str  # "" or the marker's name
    reason: str  # what follows "name:" in the marker

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _marker(lines: list[str], fence: int) -> tuple[str, str]:
    """The HTML comment that ends on the line just before the fence (it may span lines), as (name, reason)."""
    if fence == 0 or not lines[fence - 1].strip().endswith("-->"):
        return "", ""
    start = fence - 1
    while "<!--" not in lines[start]:
        start -= 1
        if start < 0:
            return "", ""
    body = " ".join(line.strip() for line in lines[start:fence])
    body = body[body.rindex("<!--") + 4: body.rindex("-->")].strip()
    name, _, reason = body.partition(":")
    return name.strip(), reason.strip()


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,})([\w+-]*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks, lang = opening.groups()
        j = i + 1
        while j < len(lines) and lines[j].strip() != ticks:
            j += 1
        assert j < len(lines), f"{page.name}:{i + 1}: a code block is never closed"
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]) + "\n"
        found.append(Block(page, i + 1, lang, code, *_marker(lines, i)))
        i = j + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def _commands(code: str) -> list[list[str]]:
    """A bash block's commands as argument lists: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def _is_kdx(word: str) -> bool:
    return word == "kdx" or word.endswith("/.venv/bin/kdx") or word == ".venv/bin/kdx"


def _cheap(words: list[str]) -> bool:
    if not _is_kdx(words[0]):
        return False
    rest = words[1:]
    return rest in (["--help"], ["-h"]) or (len(rest) == 2 and rest[0] in KDX_COMMANDS and rest[1] in ("--help", "-h")) \
        or (len(rest) >= 2 and rest[0] == "validate")


def classify(b: Block) -> str:
    """What the test does with a block: yaml, fragment, python, bash, slow, output, skip; or why it cannot."""
    if b.marker and b.marker not in MARKERS:
        return f"unknown marker '<!-- {b.marker} -->' (known: {', '.join(sorted(MARKERS))})"
    if b.marker == "no-test":
        return "skip" if b.reason else "a no-test marker needs its reason: <!-- no-test: why -->"
    if b.marker == "demo-output":
        return "output" if b.lang == "text" else "a demo-output marker is for a text block"
    if b.marker == "slow-test":
        if b.lang == "python" or (b.lang == "bash" and all(_is_kdx(w[0]) for w in _commands(b.code))):
            return "slow"
        return "a slow-test block is python or bash of kdx commands"
    if b.marker == "fragment":
        return "fragment" if b.lang == "yaml" else "a fragment marker is for a yaml block"
    if b.lang == "text":
        return "output"
    if b.lang in ("yaml", "python"):
        return b.lang
    if b.lang == "bash":
        commands = _commands(b.code)
        if commands and all(_cheap(w) for w in commands):
            return "bash"
        return "a bash block that is not only cheap kdx commands: run it (<!-- slow-test -->) or say why not (<!-- no-test: why -->)"
    return f"a '{b.lang or 'plain'}' block: give it a language (yaml, python, bash, text) or <!-- no-test: why -->"


def _of(kind: str) -> list:
    return [pytest.param(b, id=b.where) for b in ALL if classify(b) == kind]


# --- the README and the site -------------------------------------------------------------------


def test_the_readme_is_short_and_its_first_screen_has_the_picture_and_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES} (move text to docs/)"
    first = "\n".join(lines[:FIRST_SCREEN])
    assert re.search(r"!\[[^\]]*\]\(docs/frontier\.png\)", first), "the first screen shows the demo's frontier picture"
    setup = next((b for b in blocks(ROOT / "README.md") if b.lang == "bash"), None)
    assert setup is not None and setup.line <= FIRST_SCREEN, "the first screen has the set-up block"
    assert [w[:2] for w in _commands(setup.code)] == [["make", "demo"], ["make", "test"]], \
        "the set-up is exactly the two commands, make demo and make test"


def test_the_readme_links_to_every_docs_page_and_every_link_resolves():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t}
    missing = sorted(t for t in targets if t != "docs/frontier.png" and not (ROOT / t).exists())
    assert not missing, f"README.md links to files that do not exist: {missing}"
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if f"docs/{p.name}" not in targets)
    assert not unlinked, f"README.md's table of contents leaves out {unlinked}"


@pytest.mark.skipif(not (DOCS / "frontier.png").exists(), reason="docs/frontier.png is not committed yet (a fresh `make demo` makes it)")
def test_the_readme_picture_is_committed():
    assert (DOCS / "frontier.png").stat().st_size > 0


def test_the_site_builds_with_strict_and_no_warning(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "WARNING" not in out, out
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    assert {next(iter(item.values())) for item in nav} == {p.name for p in DOCS.glob("*.md")}, "the nav lists every page, once"


def test_the_readme_byo_example_is_the_one_on_its_docs_page():
    """tests/test_readme_byo.py runs the README's copy; the docs page must not drift from it."""
    def byo(page: Path) -> list[str]:
        return [b.code for b in blocks(page) if b.code.startswith(("# mylab/parts.py", "# mylab/search.yaml"))]

    assert len(byo(ROOT / "README.md")) == 2 and byo(ROOT / "README.md") == byo(DOCS / "byo.md")


def test_the_layout_page_names_every_library_file_and_no_other():
    layout = (DOCS / "layout.md").read_text(encoding="utf-8")
    files = sorted(str(p.relative_to(ROOT)) for pkg in LIBRARY for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    assert files, "no library files found"
    missing = [f for f in files if f"`{f}`" not in layout]
    assert not missing, f"docs/layout.md does not name {missing}: one line each"
    named = set(re.findall(r"`((?:%s)/[\w/]+\.py)`" % "|".join(LIBRARY), layout))
    assert not named - set(files), f"docs/layout.md names files that do not exist: {sorted(named - set(files))}"


# --- the code blocks ---------------------------------------------------------------------------


def test_every_code_block_is_run_or_marked_with_its_reason():
    known = {"yaml", "fragment", "python", "bash", "slow", "output", "skip"}
    bad = [f"{b.where} ({b.lang or 'plain'}): {classify(b)}" for b in ALL if classify(b) not in known]
    assert not bad, "blocks the test cannot classify:\n" + "\n".join(bad)


class _Strict(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (plain YAML keeps the last, silently)."""


def _no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f"key given twice: {dup}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@pytest.mark.parametrize("block", _of("yaml"))
def test_a_yaml_block_is_a_valid_kdx_config(block, tmp_path):
    from workflows.experiment import load_experiment

    yaml.load(block.code, Loader=_Strict)
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # a config may name the examples' files
    path = tmp_path / "config.yaml"
    path.write_text(block.code)
    load_experiment(str(path), need_space=False)


@pytest.mark.parametrize("block", _of("fragment"))
def test_a_yaml_fragment_parses_as_run_config_sections(block):
    from distill.config import RunConfig
    from workflows.experiment import EXPERIMENT_KEYS

    RunConfig.from_dict(yaml.load(block.code, Loader=_Strict), ignore=EXPERIMENT_KEYS)


@pytest.mark.parametrize("block", _of("python"))
def test_a_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block.code, block.where, "exec"), {"__name__": "__docs__"})


def _run_bash(block: Block, tmp_path: Path, timeout: int) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = env_for(tmp_path)
    for words in _commands(block.code):
        argv = [str(BIN / "kdx"), *words[1:]]
        p = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=timeout)
        assert p.returncode == 0, f"{block.where}: {' '.join(words)} exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


@pytest.mark.parametrize("block", _of("bash"))
def test_a_cheap_bash_block_runs(block, tmp_path):
    _run_bash(block, tmp_path, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("block", _of("slow"))
def test_a_slow_block_runs(block, tmp_path, monkeypatch):
    if block.lang == "python":
        monkeypatch.chdir(tmp_path)
        exec(compile(block.code, block.where, "exec"), {"__name__": "__docs__"})
    else:
        _run_bash(block, tmp_path, timeout=1200)
