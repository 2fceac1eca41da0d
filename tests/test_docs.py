"""README.md and docs/*.md name only commands and options that exist, and link only to what exists.

- Every ``pyro-adgm CMD [SUBCMD] --opt ...`` in a code block or inline code: the command is one of the Click
  application's (the ``pyro-adgm`` entry point of pyproject.toml), its ``--help`` runs, and each option is one of
  its parameters (``Command.params``, not the help text).
- The table of train options in docs/guide.md lists every option of ``pyro-adgm train``, and no other.
- Every relative link points at a file of the repository; a link to ``FILE.md#anchor`` at a heading of FILE.md
  (GitHub's anchors: lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``).
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
import unicodedata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_STOP = {"|", "||", ">", ">>", "<", "&&", ";", "&", "2>&1", "\\"}


def entry_point() -> click.Group:
    """The Click group that the ``pyro-adgm`` script runs."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["pyro-adgm"].split(":")
    return getattr(importlib.import_module(module), name)


APP = entry_point()


def doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_spans(text: str) -> list[str]:
    """The code of a Markdown file: each line of each fenced block (continuation lines joined) and each inline
    code span outside the blocks."""
    spans, outside, block = [], [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is None:
                block = []
            else:
                spans += " ".join(block).replace("\\ ", " ").split("\0")
                block = None
            continue
        if block is None:
            outside.append(line)
        else:
            stripped = line.rstrip()
            block.append(stripped[:-1] + " " if stripped.endswith("\\") else stripped + "\0")
    spans += re.findall(r"`([^`\n]+)`", "\n".join(outside))
    return [span for span in spans if span.strip()]


def pyro_adgm_calls(span: str) -> list[list[str]]:
    """The words after each ``pyro-adgm`` in a line of code, up to a shell operator or a comment."""
    calls = []
    for match in re.finditer(r"(?:^|[\s/(])pyro-adgm(?=\s|$)", span):
        rest = span[match.end() :]
        try:
            words = shlex.split(rest, comments=True)
        except ValueError:  # an unbalanced quote inside prose
            words = rest.split()
        call = []
        for word in words:
            if word in SHELL_STOP or word.startswith(("|", ">", "#")) or word.endswith(("|", ">")):
                break
            call.append(word)
        calls.append(call)
    return calls


def resolve(call: list[str]) -> tuple[list[str], click.Command, list[str]]:
    """(command path, the Click command, the option names used) of one call; fails on an unknown command."""
    command, path, options = APP, [], []
    for word in call:
        if word.startswith("-"):
            options.append((path.copy(), command, word.split("=", 1)[0]))
            continue
        if isinstance(command, click.Group):
            if word in ("...", "…") or word.upper() == word:  # "pyro-adgm prepare ...", "pyro-adgm CMD"
                break
            sub = command.get_command(click.Context(command), word)
            assert sub is not None, f"pyro-adgm {' '.join(path + [word])}: no such command"
            command, path = sub, path + [word]
    return path, command, options


def option_names(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def calls_in(path: Path) -> list[list[str]]:
    return [call for span in code_spans(path.read_text()) for call in pyro_adgm_calls(span)]


def test_the_parser_finds_commands_and_options():
    text = "```bash\npyro-adgm prepare rsna --root ~/rsna \\\n  --size 64 --out d  # a comment --fake\n```\nRun `pyro-adgm train --beta 10`."
    calls = [call for span in code_spans(text) for call in pyro_adgm_calls(span)]
    assert calls == [["prepare", "rsna", "--root", "~/rsna", "--size", "64", "--out", "d"], ["train", "--beta", "10"]]
    path, _, options = resolve(calls[0])
    assert path == ["prepare", "rsna"] and [o[2] for o in options] == ["--root", "--size", "--out"]
    with pytest.raises(AssertionError, match="no such command"):
        resolve(["trian", "--beta", "1"])


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_command_and_option_exists(doc):
    calls = calls_in(doc)
    assert doc.name != "guide.md" or calls, "docs/guide.md names no pyro-adgm command"
    helped = set()
    for call in calls:
        path, command, options = resolve(call)
        if tuple(path) not in helped:
            result = CliRunner().invoke(APP, [*path, "--help"])
            assert result.exit_code == 0, f"pyro-adgm {' '.join(path)} --help: {result.output}"
            helped.add(tuple(path))
        for where, owner, name in options:
            assert name in option_names(owner), (
                f"{doc_id(doc)}: pyro-adgm {' '.join(where)} has no option {name} (in: pyro-adgm {' '.join(call)})"
            )


def train_table_options() -> set[str]:
    """The options in the first column of docs/guide.md's table whose header begins with ``| option``."""
    lines = (ROOT / "docs" / "guide.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*option\b", line))
    names = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        names.update(re.findall(r"--[a-z][a-z0-9-]*", first))
    return names


def test_the_guide_tables_every_train_option():
    train = APP.get_command(click.Context(APP), "train")
    expected = option_names(train) - {"--help", "-h"}
    listed = train_table_options()
    assert not expected - listed, f"train options missing from docs/guide.md's table: {sorted(expected - listed)}"
    assert not listed - expected, f"docs/guide.md's table lists options train does not have: {sorted(listed - expected)}"


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: links reduced to their text, lower case, every character that is not
    a letter, a digit, a space, ``-`` or ``_`` dropped, spaces turned into ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen, in_block = set(), {}, False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        match = re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match and not in_block:
            anchor = github_anchor(match.group(2))
            n = seen.get(anchor, 0)
            found.add(anchor if n == 0 else f"{anchor}-{n}")
            seen[anchor] = n + 1
    return found


def test_github_anchor_rules():
    assert github_anchor("Ablation of the root fixes (PneumoniaMNIST, test split drawn from train)") == (
        "ablation-of-the-root-fixes-pneumoniamnist-test-split-drawn-from-train")
    assert github_anchor("MNIST, 100 labels (`examples/mnist_100_labels.py`)") == "mnist-100-labels-examplesmnist_100_labelspy"
    assert github_anchor("On a GPU") == "on-a-gpu"


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("doc", [*DOCS, ROOT / "BENCHMARKS.md"], ids=doc_id)
def test_every_relative_link_resolves(doc):
    for target in links(doc):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        assert linked.exists(), f"{doc_id(doc)}: link to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{doc_id(doc)}: link to {target}: no such heading in {linked.name}"


def test_readme_links_into_benchmarks_and_docs():
    targets = links(ROOT / "README.md")
    assert any(t.startswith("BENCHMARKS.md#") for t in targets)
    for name in ("guide.md", "model.md", "reproduce.md"):
        assert any(t.startswith(f"docs/{name}") for t in targets), f"README.md does not link to docs/{name}"
