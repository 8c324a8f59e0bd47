"""The docs run: every ```python block of README.md and docs/*.md (not docs/spec.md, not docs/results/), and
the output shown below a block is what it prints.

Each page runs as a reader would run it: its blocks in order, in one namespace, in a scratch directory that
holds the files the pages name as the reader's own (``model.zip``: an SB3 PPO zip; ``tiny.pt``: a pretrained
checkpoint), with torch on one thread. A ```text block right after a python block is its shown output: the
printed text must match it, numbers within one unit of the last digit shown.

Markers, an HTML comment on the line right before a block (invisible on the rendered page):

* ``<!-- docs-test: fast "OLD" "NEW" -->`` (repeatable): in the default run, replace the text ``OLD`` of the
  block by ``NEW`` (a smaller budget: fewer steps, a smaller sweep). The slow run (``pytest -m slow``) runs
  every block exactly as written.
* ``<!-- docs-test: slow -->``: only in the slow run (a block that takes minutes even with small budgets).
* ``<!-- docs-test: skip REASON -->``: never run (for what no test machine has; say why).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "spec.md")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(\w+)\s*(.*?)\s*-->\s*$")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass
class Block:
    """One ```python block: its code, where it starts, its markers and the output shown after it."""

    code: str
    line: int
    fast: list[tuple[str, str]] = field(default_factory=list)
    skip: str | None = None
    slow: bool = False
    shown: str | None = None


def blocks(page: Path) -> list[Block]:
    """The python blocks of a page, with their markers and shown output."""
    lines = page.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        block = Block("\n".join(lines[i + 1 : end]) + "\n", start + 2)
        j = start - 1
        while j >= 0 and (m := MARKER.match(lines[j].strip())):
            kind, arg = m.groups()
            if kind == "fast":
                old, new = shlex.split(arg)
                assert old in block.code, f"{page.name}:{block.line}: marker text {old!r} is not in the block"
                block.fast.append((old, new))
            elif kind == "skip":
                block.skip = arg or "no reason given"
            elif kind == "slow":
                block.slow = True
            else:
                raise AssertionError(f"{page.name}:{j + 1}: unknown docs-test marker {kind!r}")
            j -= 1
        if end + 1 < len(lines) and lines[end + 1].strip() == "```text":
            stop = next(k for k in range(end + 2, len(lines)) if lines[k].strip() == "```")
            block.shown = "\n".join(lines[end + 2 : stop]) + "\n"
            end = stop
        out.append(block)
        i = end + 1
    return out


def same_output(printed: str, shown: str) -> bool:
    """``printed`` is ``shown`` up to whitespace, numbers within one unit of the last digit shown."""
    got, want = printed.split(), shown.split()
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        if NUMBER.sub("#", a) != NUMBER.sub("#", b):
            return False
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            decimals = len(y.split(".")[1].split("e")[0].split("E")[0]) if "." in y else 0
            unit = 10.0**-decimals * (10.0 ** int(y.lower().split("e")[1]) if "e" in y.lower() else 1.0)
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1.000001 * unit):
                return False
    return True


@pytest.fixture(scope="module")
def readers_files(tmp_path_factory) -> Path:
    """What the pages assume the reader has: an SB3 PPO zip and a pretrained checkpoint, both tiny."""
    root = tmp_path_factory.mktemp("reader")
    from agents.pretrain import PretrainConfig, pretrain
    from agents.sb3 import train_ppo

    cfg = PretrainConfig.preset("tiny", seed=0, budget="quick")
    pretrain(PretrainConfig(**{**cfg.to_dict(), "steps": 20}), root / "tiny.pt", progress=False)
    train_ppo(timesteps=64, n_envs=8, n_steps=8, batch_size=32, out=root / "model.zip", eval_every=0)
    return root


def run_page(page: Path, workdir: Path, literal: bool, monkeypatch) -> None:
    """Run the page's blocks in order in one namespace in ``workdir``; ``literal``: without fast markers."""
    monkeypatch.chdir(workdir)
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.skip or (block.slow and not literal):
            continue
        code = block.code
        if not literal:
            for old, new in block.fast:
                code = code.replace(old, new)
        printed = io.StringIO()
        where = f"{page.relative_to(REPO)}:{block.line}"
        with contextlib.redirect_stdout(printed):
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs' own code
        if block.shown is not None and (literal or not block.fast):
            assert same_output(printed.getvalue(), block.shown), (
                f"{where}: the block prints\n{printed.getvalue()}\nbut the page shows\n{block.shown}"
            )


@pytest.fixture
def workdir(readers_files, tmp_path) -> Path:
    for name in ("tiny.pt", "model.zip"):
        (tmp_path / name).write_bytes((readers_files / name).read_bytes())
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_runs(page, workdir, monkeypatch):
    run_page(page, workdir, literal=False, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_runs_as_written(page, workdir, monkeypatch):
    run_page(page, workdir, literal=True, monkeypatch=monkeypatch)


def test_the_parser_finds_markers_and_shown_output(tmp_path):
    page = tmp_path / "p.md"
    page.write_text(
        "text\n"
        '<!-- docs-test: fast "learn(100)" "learn(2)" -->\n'
        "```python\nprint(1.25)\nmodel.learn(100)\n```\n"
        "```text\n1.25\n```\n"
        "<!-- docs-test: skip needs a GPU -->\n"
        "```python\nimport cuda\n```\n"
    )
    first, second = blocks(page)
    assert first.fast == [("learn(100)", "learn(2)")] and first.shown == "1.25\n" and first.line == 4
    assert second.skip == "needs a GPU" and second.shown is None
    assert same_output("a 0.12346 b\n", "a 0.1235 b") and same_output("x 1.0e-3", "x 1.1e-3")
    assert not same_output("a 0.1237", "a 0.1235") and not same_output("op=1", "imp=1")


def test_every_page_with_code_is_tested():
    assert sum(len(blocks(p)) for p in PAGES) >= 10
    assert all(p.exists() for p in PAGES) and REPO / "README.md" in PAGES


def test_the_names_the_docs_use_are_reachable_after_a_bare_import():
    # a fresh interpreter: `import agents` then agents.reference.*, agents.sb3.*, ... as the pages write them;
    # and the command line's entry point imports nothing heavy, so it takes Ctrl-C before its imports start
    code = (
        "import sys, agents, agents.cli\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'stable_baselines3') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(agents.reference.OraclePolicy.__name__, agents.sb3.train_ppo.__name__, agents.load.__name__,\n"
        "      agents.checkpoint.load_checkpoint.__name__, sorted(agents.SIZES), agents.PretrainConfig.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:4] == ["OraclePolicy", "train_ppo", "load", "load_checkpoint"]
