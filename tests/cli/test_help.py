"""Every command has working --help, `hearth --help` is light, and the README reference is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hearth.cli.app import COMMANDS as COMMAND_TABLE
from hearth.cli.app import app, load_all

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = list(COMMAND_TABLE)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "hearth " in result.output  # an example of the command in use


def test_the_command_table_matches_the_commands():
    """`hearth --help` lists COMMANDS without importing the modules: each entry must name the
    module that registers the command, and its summary must be the docstring's first line."""
    registered = load_all()
    assert sorted(registered) == sorted(COMMAND_TABLE)
    for name, sub in registered.items():
        info = sub.registered_commands[0]
        module, summary = COMMAND_TABLE[name]
        assert info.callback.__module__.endswith(f".cli.{module}")
        assert info.callback.__doc__.strip().splitlines()[0] == summary


def test_top_level_help_lists_commands_without_importing_them():
    code = ("import sys; from hearth.cli.app import main; sys.argv=['hearth','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('hearth.cli.') and m.split('.')[-1] in "
            "('run', 'chat', 'batch', 'models', 'convert', 'hw')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "LOADED []" in out and "quantize" in out


def test_top_level_help_imports_nothing_heavy():
    code = ("import sys; from hearth.cli.app import main; sys.argv=['hearth','--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('llama_cpp','huggingface_hub','numpy','torch','transformers','fastapi','uvicorn',\n"
            "'starlette','pydantic','openai','httpx','ray') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def test_readme_command_reference_is_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_reference.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
