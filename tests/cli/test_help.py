"""Every command has working --help, `hearth --help` is light, and the README reference is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hearth.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [info.name for info in app.registered_commands]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "hearth " in result.output  # an example of the command in use


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
