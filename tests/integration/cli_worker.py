"""Run many `hearth` command lines in one process, one JSON line of results per command.

`python cli_worker.py ARGS.jsonl` reads one JSON list of arguments per line and runs each
through hearth's real CLI (`hearth.cli.app.app`, via typer's CliRunner). Before each command it
prints `{"start": i}` and flushes, so that when llama.cpp aborts the whole process on command i,
the parent knows which one did it and starts a new worker on the rest (`run_isolated`).

Starting Python and importing hearth once for many commands instead of once per command makes a
fuzz of hundreds of `hearth run` cases affordable.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


def main(args_file: str) -> None:
    from typer.testing import CliRunner

    from hearth.cli.app import app

    runner = CliRunner()
    for i, line in enumerate(Path(args_file).read_text().splitlines()):
        print(json.dumps({"start": i}), flush=True)
        result = runner.invoke(app, json.loads(line))
        unexpected = result.exception is not None and not isinstance(result.exception, SystemExit)
        print(json.dumps({"done": i, "exit_code": result.exit_code, "stderr": result.stderr,
                          "exception": repr(result.exception) if unexpected else None}), flush=True)


@dataclass
class Outcome:
    args: list[str]
    exit_code: int | None = None  # None: the process died (signal) or hung on this command
    stderr: str = ""
    exception: str | None = None  # an exception other than SystemExit escaped the command
    died: str | None = None  # "signal 6", "timeout"


def _limit_memory() -> None:
    # A damaged header must not be able to take the machine's memory with it. RLIMIT_DATA (heap
    # and private writable mappings), not RLIMIT_AS: a GPU runtime reserves far more address space.
    resource.setrlimit(resource.RLIMIT_DATA, (8 << 30, 8 << 30))


def run_isolated(commands: list[list[str]], workdir: Path, per_command_timeout: float = 60) -> list[Outcome]:
    """Run every command line; a crash or hang ends only that command's outcome, not the rest."""
    outcomes = [Outcome(list(c)) for c in commands]
    first = 0
    attempt = 0
    while first < len(commands):
        args_file = workdir / f"worker-args-{attempt}.jsonl"
        args_file.write_text("".join(json.dumps(c) + "\n" for c in commands[first:]))
        current = _run_worker(args_file, outcomes[first:], per_command_timeout)
        if current is None:
            break
        first += current + 1  # the command that crashed or hung is recorded; go on after it
        attempt += 1
    return outcomes


def _run_worker(args_file: Path, outcomes: list[Outcome], timeout: float) -> int | None:
    """Run a worker over `outcomes`; None when all finished, else the index it died on."""
    log = args_file.with_suffix(".stderr")
    with open(log, "w") as stderr:  # a file, not a pipe: an abort's backtrace must not block it
        proc = subprocess.Popen([sys.executable, __file__, str(args_file)], stdout=subprocess.PIPE,
                                stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1"), preexec_fn=_limit_memory)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)], daemon=True).start()
    current = None
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            proc.wait()
            outcomes[current or 0].died = "timeout"
            return current or 0
        if line is None:
            break
        if not line.startswith("{"):
            continue  # something in C wrote to stdout
        record = json.loads(line)
        if "start" in record:
            current = record["start"]
            continue
        done = outcomes[record["done"]]
        done.exit_code, done.stderr, done.exception = record["exit_code"], record["stderr"], record["exception"]
        current = None
    code = proc.wait()
    if current is None:
        return None
    outcomes[current].died = f"signal {-code}" if code < 0 else f"worker exit {code}: {log.read_text()[-2000:]}"
    return current


if __name__ == "__main__":
    main(sys.argv[1])
