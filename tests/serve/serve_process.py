"""A real `hearth serve` subprocess on a free 127.0.0.1 port, for clients to drive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# A grammar that never reaches an accepting state: end-of-generation is never allowed, so an
# answer runs to max_tokens, and whatever a test does mid-answer provably lands on work left.
ENDLESS = 'root ::= [a-z ] root\n'


class ServerProcess:
    """`hearth serve --port 0 ...`; stderr is collected line by line (a test may read it)."""

    def __init__(self, args: list[str], home: Path, env: dict | None = None, timeout: float = 120,
                 listening_host: str = "127.0.0.1"):
        self._listening = re.compile(rf"listening on (http://{re.escape(listening_host)}:(\d+))/v1")
        full_env = dict(os.environ, HEARTH_HOME=str(home / "hearth-home"), HF_HUB_CACHE=str(home / "hf-cache"),
                        HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "hearth.cli", "serve", "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=full_env)
        self.lines: list[str] = []
        self.stdout = ""
        self._ready = threading.Event()
        self.base = ""
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()
        if not self._ready.wait(timeout):
            self.proc.kill()
            raise AssertionError("hearth serve did not start:\n" + self.stderr)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = self._listening.search(line)
            if match:
                self.base = match.group(1)
                self._ready.set()
        self._ready.set()  # ended without listening: the constructor reports stderr

    def _read_stdout(self) -> None:
        self.stdout = self.proc.stdout.read()

    @property
    def url(self) -> str:
        return self.base + "/v1"

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code


def wait_for(condition, timeout: float = 60, every: float = 0.05):
    """Poll until `condition()` is truthy (returns it), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")
