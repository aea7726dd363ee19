"""The commands the READMEs show run as written: every `gimbal` command in a code block parses with the command's own
parser, and every observation-benchmark variant a code block names is one the benchmark has."""

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "benchmarks" / "README.md"]


def _commands(path: Path, program: str) -> list[list[str]]:
    """The command lines of ``path``'s code blocks that start with ``program``, continuations joined, comments off."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    found = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            if not line.startswith(program + " "):  # other lines may not be shell at all (Python, YAML)
                continue
            words = shlex.split(line, comments=True)
            while "&&" in words:  # `a && b`: two commands
                found.append(words[: words.index("&&")])
                words = words[words.index("&&") + 1:]
            found.append(words)
    found = [w for w in found if w[: len(program.split())] == program.split()]
    return found


def test_every_gimbal_command_in_the_readme_parses():
    from gimbal.cli import build_parser

    commands = _commands(REPO / "README.md", "gimbal")
    assert len(commands) >= 10  # the README's usage blocks
    parser = build_parser()
    for words in commands:
        try:
            parser.parse_args(words[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {shlex.join(words)}")


def test_every_observation_variant_the_readmes_name_exists():
    from benchmarks.observation import variant_options

    named = []
    for path in READMES:
        for words in _commands(path, "python -m benchmarks observation"):
            if "--variants" in words:
                states = int(words[words.index("--states") + 1]) if "--states" in words else 4
                named += [(path.relative_to(REPO), states, v) for v in words[words.index("--variants") + 1].split(";")]
    assert len(named) >= 5  # the T = 1800 commands and the degrees-of-freedom comparison
    for name, states, label in named:
        assert label in variant_options(states), f"{name} names a variant the benchmark does not have: {label!r}"
