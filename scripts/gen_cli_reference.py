#!/usr/bin/env python3
"""Regenerate the command reference in README.md from the CLI's own --help texts.

usage: python scripts/gen_cli_reference.py [--check]
(--check exits 1 if README.md is out of date; tests/cli/test_help.py runs it.)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def help_text(args: list[str]) -> str:
    from typer.testing import CliRunner

    from hearth.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100", "TERM": "dumb"}, prog_name="hearth")
    if result.exit_code != 0:
        raise SystemExit(f"`hearth {' '.join(args)} --help` failed: {result.output}")
    return result.output.rstrip()


def command_names() -> list[str]:
    from hearth.cli.app import COMMANDS

    return list(COMMANDS)


def reference() -> str:
    parts = ["```text", "$ hearth --help", help_text([]), "```"]
    for name in command_names():
        parts += ["", f"### hearth {name}", "", "```text", f"$ hearth {name} --help", help_text([name]), "```"]
    return "\n".join(parts)


def updated(readme: str) -> str:
    block = f"{START}\n{reference()}\n{END}"
    if START not in readme:
        return readme.rstrip() + "\n\n## Command reference\n\n" + block + "\n"
    return re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    os.environ["COLUMNS"] = "100"
    current = README.read_text(encoding="utf-8")
    new = updated(current)
    if args.check:
        if new != current:
            print("README.md command reference is out of date: run python scripts/gen_cli_reference.py", file=sys.stderr)
            sys.exit(1)
        return
    README.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
