"""The README is a contract (issue #11, item 8): every ``micronet …`` line of its code blocks parses with
the CLI's own argparse, and the quick ones run as written -- so the README cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from micronet_lib.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
# A placeholder the reader replaces (RUN_ID, CHECKPOINT): shell-safe; a line holding one is only parsed.
PLACEHOLDER = re.compile(r"(?<![A-Za-z])[A-Z][A-Z0-9_]{2,}(?![a-z])")
# Subcommands quick enough to run here (seconds: released checkpoints, counts).
RUNS = ("fetch", "score", "sparsity")
# Slow subcommands that have a flag which checks everything but does no work.
DRY_RUN = {"train": "--dry-run"}


def readme_commands() -> dict[str, str]:
    """Every line of a README code block that starts with ``micronet ``: the command, comment stripped
    and spaces normalised, mapped to its comment."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return {" ".join(shlex.split(line, comments=True)): (line.split(" #", 1)[1] if " #" in line else "")
            for line in lines if line.startswith("micronet ")}


COMMANDS = readme_commands()


def test_readme_has_the_command_lines():
    assert len(COMMANDS) >= 10
    assert any(c.startswith("micronet reproduce") for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_is_shell_valid_and_parses(line):
    # As written in a shell: no <placeholders> (redirections), [optional] parts or a|b alternatives.
    assert not re.search(r"[<>\[\]|]", line), f"not runnable as written in a shell: {line}"
    build_parser().parse_args(shlex.split(line)[1:])  # argparse exits (a test error) on an unknown command/option


def _quick(line: str) -> bool:
    argv = shlex.split(line)[1:]
    if PLACEHOLDER.search(line):
        return False
    if argv[0] == "prune":
        return "--one-shot" in argv  # the schedule trains for hours
    return argv[0] in RUNS or argv[0] in DRY_RUN


@pytest.mark.parametrize("line", [c for c in COMMANDS if _quick(c)])
def test_readme_quick_command_runs_as_written(line, asset, tmp_path, monkeypatch, capsys):
    """Runs offline in a scratch folder (``--out pr30.pt`` lands there); a number the README's comment
    gives for the line (``# 0.0054454 …``, ``# 2.0: …``) must appear in what the command prints."""
    for name in ("micronet_v1_pr_60.t7", "micronet_v2_pr_15.t7", "micronet_v2_pr_60.t7"):
        asset(name)  # released checkpoints: skip locally / fail in CI without them
    monkeypatch.setenv("MICRONET_OFFLINE", "1")
    monkeypatch.setenv("MICRONET_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(line)[1:]
    if argv[0] in DRY_RUN:
        argv.append(DRY_RUN[argv[0]])
    rc = main(argv)
    out = capsys.readouterr()
    assert rc == 0, f"`{line}` failed: {out.err}"
    claim = COMMANDS[line].split(":")[0]
    for number in re.findall(r"\d+\.\d+", claim):
        assert number in out.out, f"README says {number} for `{line}`; the command printed:\n{out.out[:2000]}"
