"""No tracked text file tells the history of the work (which round, sitting or machine a figure came from).

Documents, docstrings and comments state settings, figures and the commit a result ran at. The patterns below
catch the words that tell the story instead; a few phrases that use such a word for something else (a subprocess
argument, a fraction, a running maximum) are allowed by their exact text.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: word-boundary patterns, matched case-insensitively
HISTORY_PATTERNS = [
    r"\bsessions?\b",
    r"\bsittings?\b",
    r"\brounds? (?:of work|\d+)\b",
    r"\b(?:fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth)\b",
    r"\bearlier\b",
    r"\bprevious (?:run|runs|sweep|sweeps|version|versions|commit|commits|attempt|attempts|result|results)\b",
    r"\blast time\b",
    r"\bthis time\b",
    r"\b(?:today|yesterday|tonight|this morning|this afternoon)\b",
    r"\bthis machine\b",
    r"\bthe lent\b",
    r"\bso far\b",
    r"\buntil now\b",
    r"\bfor now\b",
    r"\bat the time\b(?! limit)",
    r"\bback then\b",
    r"\bnow the defaults?\b",
    r"\bthe defaults? now\b",
    r"\b(?:became|become|becomes) (?:the|a) default\b",
    r"\bwe (?:tried|ran|found|saw|measured|decided)\b",
]

#: exact phrases that contain a pattern above but say nothing about the history of the work
ALLOWED_PHRASES = [
    "start_new_session",  # subprocess argument
    "a tenth of",  # a fraction
    "every sixth image is lateral",  # tests/test_data_csv.py: one image in six
    "its best so far",  # a running maximum
    "the report so far",  # the report of the images decoded before the stop
    "the earlier epochs",  # the epochs of one run before the current one
    "an earlier batch-norm call",  # an earlier call in one autograd graph
]

#: data-only files (numbers and run folder names)
SKIPPED = re.compile(r"^benchmarks/results/.*\.csv$")

#: the patterns and the allowed phrases are spelled out in this file
SELF = "tests/test_history_words.py"


def tracked_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in out.splitlines():
        path = ROOT / name
        if name == SELF or SKIPPED.match(name) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary (PNG and the like)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(name)
    return files


def history_hits(text: str) -> list[str]:
    """Each match of a pattern, with its line, that no allowed phrase covers."""
    covered = []
    for phrase in ALLOWED_PHRASES:
        covered += [(m.start(), m.end()) for m in re.finditer(re.escape(phrase), text, flags=re.IGNORECASE)]
    hits = []
    for pattern in HISTORY_PATTERNS:
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            if any(start <= match.start() and match.end() <= end for start, end in covered):
                continue
            line_no = text.count("\n", 0, match.start()) + 1
            line = text.splitlines()[line_no - 1].strip()
            hits.append(f"{line_no}: {match.group(0)!r} in {line[:160]!r}")
    return hits


def test_patterns_catch_history_and_spare_the_allowed_phrases():
    assert history_hits("results of the eleventh sitting on this machine today")
    assert history_hits("as in the previous run, which was earlier")
    assert history_hits("(now the default)") and history_hits("a session later")
    assert not history_hits("subprocess.Popen(..., start_new_session=True)")
    assert not history_hits("the warm-up, which is a tenth of the paper's run")
    assert not history_hits("the second epoch, the first seed, a rounded value, no longer than it needs")


def test_tracked_files_are_scanned():
    files = tracked_text_files()
    assert "README.md" in files and "BENCHMARKS.md" in files and "pyro_adgm/model.py" in files
    assert not any(name.endswith(".png") for name in files)


@pytest.mark.parametrize("name", tracked_text_files())
def test_no_history_words(name):
    hits = history_hits((ROOT / name).read_text(encoding="utf-8"))
    assert not hits, f"{name} tells the history of the work:\n" + "\n".join(hits)
