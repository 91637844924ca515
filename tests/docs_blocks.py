"""Every fenced block of README.md, docs/*.md and examples/**/*.md runs in CI as written (sybil collects them).

A block tagged ```bash or ```python is executed from the root of a scratch copy of the repository (tracked and
untracked files, modification times kept, `.venv` linked to the interpreter running the tests), with the project's
venv first on PATH and a HOME of its own (a local Ray writes its auth token there; cpu_tiny keeps its data there),
shared by all blocks of the session so that cpu_tiny's data and cold start are built once. The copy keeps the
checkout clean: a block may write plots, run folders or results as its text says. ```text blocks are not run.

Before a block, an HTML comment (invisible on GitHub) may say how it runs:

    <!-- skip: next "GPU: an 8-GPU node" -->           not runnable here; the reason is required (sybil's skip)
    <!-- docs-run: why "30 steps take 3 min" env STEPS=2 sub "--seeds 3" "--seeds 1" expect "tau_pos=4.05" timeout 300 -->

`docs-run` makes a shortened variant: `env NAME=VALUE` exports a variable (a recipe knob, make's ARGS) before the
block, `sub OLD NEW` replaces text in it (OLD must occur: a stale directive fails), both need `why`; `expect TEXT`
checks that the output contains TEXT (a number the page quotes); `timeout` in seconds (default 300). Values may use
$DOCS_TMP, a folder of the block's own. Everything else runs exactly as written, `set -euo pipefail`.
tests/test_docs.py checks that every fenced block has a language, and every skip a reason.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer
from sybil.region import Region

ROOT = Path(__file__).resolve().parents[1]
PAGE_PATTERNS = ["README.md", "docs/*.md", "examples/*.md", "examples/*/*.md"]
RUN_LANGUAGES = ("bash", "python")
NOT_RUN_LANGUAGES = ("text",)
DIRECTIVE = "docs-run"
DEFAULT_TIMEOUT_S = 300
_PENDING = "_docs_run_pending"


class DirectiveError(ValueError):
    """A `docs-run` comment that cannot be read; the message names the page, line and fix."""


@dataclass
class RunSpec:
    """How the next block runs (from its `docs-run` comment; the default: as written)."""

    env: dict[str, str] = field(default_factory=dict)
    subs: list[tuple[str, str]] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT_S
    why: str = ""

    @classmethod
    def parse(cls, arguments: str, where: str) -> "RunSpec":
        words, spec = shlex.split(arguments), cls()
        i = 0
        try:
            while i < len(words):
                word = words[i]
                if word == "env":
                    name, sep, value = words[i + 1].partition("=")
                    if not sep or not name:
                        raise DirectiveError(f"{where}: `env {words[i + 1]}`: write env NAME=VALUE")
                    spec.env[name] = value
                    i += 2
                elif word == "sub":
                    spec.subs.append((words[i + 1], words[i + 2]))
                    i += 3
                elif word in ("expect", "why", "timeout"):
                    value = words[i + 1]
                    if word == "expect":
                        spec.expect.append(value)
                    elif word == "why":
                        spec.why = value
                    else:
                        spec.timeout = float(value)
                    i += 2
                else:
                    raise DirectiveError(f"{where}: unknown word {word!r} in `{DIRECTIVE}: {arguments}`; use "
                                         f"env NAME=VALUE, sub OLD NEW, expect TEXT, timeout S, why TEXT")
        except IndexError:
            raise DirectiveError(f"{where}: `{DIRECTIVE}: {arguments}` ends early: `{words[-1]}` needs its value(s)") from None
        if (spec.env or spec.subs) and not spec.why:
            raise DirectiveError(f"{where}: a shortened variant must say why (add why \"...\")")
        return spec

    def apply(self, source: str, where: str) -> str:
        for old, new in self.subs:
            if old not in source:
                raise DirectiveError(f"{where}: `sub {old!r} ...`: the block does not contain {old!r} (stale directive)")
            source = source.replace(old, new)
        return source


def _where(example) -> str:
    path = Path(example.path)
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{example.line}"


def parse_directives(document) -> list[Region]:
    lexer = DirectiveInHTMLCommentLexer(directive=DIRECTIVE, arguments=".+?")
    regions = []
    for lexed in lexer(document):
        region = Region(lexed.start, lexed.end, lexed.lexemes["arguments"], _hold_spec)
        regions.append(region)
    return regions


def _hold_spec(example) -> None:
    """Evaluate a `docs-run` comment: read it now (a bad one fails here) and keep it for the next block."""
    example.namespace[_PENDING] = RunSpec.parse(example.parsed, _where(example))


def _take_spec(example) -> RunSpec:
    return example.namespace.pop(_PENDING, None) or RunSpec()


# --------------------------------------------------------------------------------------------------------------
# The scratch copy of the repository and the environment blocks run in
# --------------------------------------------------------------------------------------------------------------


def make_sandbox(parent: Path) -> Path:
    """A copy of the checkout's files (git's tracked and untracked, not ignored), modification times kept, with
    `.venv` linked to the venv running the tests: commands find what they find in a clone after `make setup`."""
    root = parent / "repo"
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():  # a deleted, not yet committed file is still listed
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / ".venv").symlink_to(Path(sys.prefix))
    shared = ROOT.parent / "shared"  # the workspace's shared data (GSM8K), beside the checkout as in CI
    if shared.is_dir():
        (parent / "shared").symlink_to(shared)
    return root


def make_sandbox_and_home(parent: Path) -> tuple[Path, Path]:
    """(a scratch copy of the repository, the HOME its blocks share), both under `parent`."""
    home = parent / "home"
    home.mkdir()
    return make_sandbox(parent), home


def block_environment(home: Path, block_tmp: Path, spec: RunSpec) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), VIRTUAL_ENV=sys.prefix, PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
               DOCS_TMP=str(block_tmp), PYTHONUNBUFFERED="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("VERL_PLATFORM", None)  # a test module's platform switch must not reach a user's command
    for name, value in spec.env.items():
        env[name] = os.path.expandvars(value.replace("$DOCS_TMP", str(block_tmp)))
    return env


def _check_make_stamp(sandbox: Path, source: str) -> None:
    """`make` in the copy must find the venv up to date (else it would rebuild the real one from the copy)."""
    if "make " not in source:
        return
    stamp = sandbox / ".venv" / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < (sandbox / "setup.py").stat().st_mtime:
        raise AssertionError("the venv is older than setup.py: run `make setup` before the docs tests")


def run_block(example, argv: list[str], source: str) -> None:
    spec = _take_spec(example)
    where = _where(example)
    source = spec.apply(source, where)
    sandbox, home = example.namespace["docs_sandbox"]
    _check_make_stamp(sandbox, source)
    block_tmp = Path(tempfile.mkdtemp(prefix="block-", dir=home.parent))
    env = block_environment(home, block_tmp, spec)
    try:
        proc = subprocess.run(argv, input=source, cwd=sandbox, env=env, capture_output=True, text=True,
                              timeout=spec.timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{where}: still running after {spec.timeout:.0f} s:\n{source}") from exc
    output = proc.stdout + proc.stderr
    tail = "\n".join(output.splitlines()[-40:])
    shortened = f" (shortened: {spec.why})" if spec.why else ""
    assert proc.returncode == 0, f"{where}{shortened}: exit status {proc.returncode}\n--- block\n{source}--- output\n{tail}"
    for text in spec.expect:
        assert text in output, f"{where}: the output lacks {text!r} (the page quotes it)\n--- output\n{tail}"


def run_bash(example) -> None:
    run_block(example, ["bash", "-euo", "pipefail", "-s"], example.parsed)


def run_python(example) -> None:
    run_block(example, [sys.executable, "-"], example.parsed)


docs_sybil = Sybil(
    parsers=[SkipParser(), parse_directives, CodeBlockParser("bash", run_bash), CodeBlockParser("python", run_python)],
    patterns=PAGE_PATTERNS,
    path=str(ROOT),
    fixtures=["docs_sandbox"],
)
