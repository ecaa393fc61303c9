"""Fuzzed GGUF headers through `hearth show`, `hearth plan` and `hearth run -n 1`.

Seeded mutations of the embedded model's header, metadata and tensor infos (bit flips, random
bytes, odd and huge values in counts, lengths, types and numbers, zeroed ranges, truncation).
Every case must end in success or in a short error (at most 4 lines, no traceback, exit 1 or
2): never a crash by signal, a hang or an exception escaping the CLI. `show` and `plan` run
in-process; `run` runs in worker processes (`cli_worker.run_isolated`), because the cases
hearth's pre-checks let through reach llama.cpp, which aborts the process on what it only
asserts. A failure names its case and mutation; the same SEED reproduces it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cli_worker import Outcome, run_isolated
from gguf_mutations import mutations, write_case
from typer.testing import CliRunner

from hearth.cli.app import app
from hearth.runtime.gguf_file import read_gguf

SEED = int(os.environ.get("HEARTH_FUZZ_SEED", "20251202"))  # another seed explores other cases
CASES = 320
CHUNK = 64  # cases on disk at a time (each is a 1.8 MB header plus a hole)
MAX_ERROR_LINES = 4

pytestmark = pytest.mark.slow


def problems_of(label: str, exit_code: int | None, stderr: str, exception: str | None = None,
                died: str | None = None) -> list[str]:
    """What is wrong with how one command ended (nothing, when it ended well)."""
    lines = stderr.strip().splitlines()
    found = []
    if died:
        found.append(f"{label}: {died}")
    elif exception:
        found.append(f"{label}: raised {exception}")
    elif exit_code not in (0, 1, 2):
        found.append(f"{label}: exit code {exit_code}")
    if "Traceback" in stderr or len(lines) > MAX_ERROR_LINES:
        found.append(f"{label}: {len(lines)} lines on stderr: {lines[-3:]}")
    if exit_code and not died and not any(line.startswith("error: ") for line in lines):
        found.append(f"{label}: exit {exit_code} without an error line: {lines[-3:]}")
    return found


def test_fuzzed_headers_end_in_short_errors_never_crashes(tmp_path, default_model_path):
    header_size = read_gguf(default_model_path).data_offset
    with open(default_model_path, "rb") as handle:
        region = handle.read(header_size)
    full_size = default_model_path.stat().st_size
    cases = mutations(region, SEED, CASES)
    runner = CliRunner()
    problems: list[str] = []
    tally = {"header refused": 0, "reached llama.cpp": 0, "llama.cpp refused": 0, "ran": 0}
    for start in range(0, len(cases), CHUNK):
        chunk = cases[start:start + CHUNK]
        paths = [write_case(m, tmp_path / f"case{m.case:03d}.gguf", full_size) for m in chunk]
        run_commands = []
        for m, path in zip(chunk, paths):
            label = f"case {m.case} ({m.description})"
            results = {command: runner.invoke(app, [command, str(path)]) for command in ("show", "plan")}
            for command, result in results.items():
                escaped = result.exception if not isinstance(result.exception, (SystemExit, type(None))) else None
                problems += problems_of(f"{label}: hearth {command}", result.exit_code, result.stderr,
                                        repr(escaped) if escaped else None)
            if results["show"].exit_code:
                tally["header refused"] += 1
                if path.name not in results["show"].stderr:  # which file, and where in it
                    problems.append(f"{label}: hearth show's error does not name the file: {results['show'].stderr!r}")
            run_commands.append(["run", "-m", str(path), "hi", "-n", "1"])
        for m, outcome in zip(chunk, run_isolated(run_commands, tmp_path)):
            problems += problems_of(f"case {m.case} ({m.description}): hearth run", outcome.exit_code,
                                    outcome.stderr, outcome.exception, outcome.died)
            _count_run(tally, outcome)
        if start == 0:
            problems += _real_program_sample(chunk, paths)
        for path in paths:
            path.unlink()
    assert not problems, f"{len(problems)} problems (SEED {SEED}, {tally}):\n" + "\n".join(problems[:25])
    # The fuzz must reach every outcome, or it tests less than it claims.
    assert tally["header refused"] > CASES // 3, tally
    assert tally["reached llama.cpp"] >= 20 and tally["ran"] >= 10, tally


def _count_run(tally: dict, outcome: Outcome) -> None:
    if outcome.exit_code == 0:
        tally["ran"] += 1
    if outcome.exit_code == 0 or "llama.cpp could not load" in outcome.stderr:
        tally["reached llama.cpp"] += 1
        tally["llama.cpp refused"] += outcome.exit_code != 0


def _real_program_sample(chunk, paths) -> list[str]:
    """A few cases through the real `hearth` program too (entry point, exit codes, stderr)."""
    problems = []
    for m, path in list(zip(chunk, paths))[::16]:
        done = subprocess.run([sys.executable, "-m", "hearth.cli", "run", "-m", str(path), "hi", "-n", "1"],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
        problems += problems_of(f"case {m.case} ({m.description}): the hearth program", done.returncode,
                                done.stderr, died=f"signal {-done.returncode}" if done.returncode < 0 else None)
    return problems
