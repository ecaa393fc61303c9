"""Ctrl-C during `hearth run`: partial output kept, exit code 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_ctrl_c_mid_answer_exits_130_with_partial_output():
    proc = subprocess.Popen(
        [sys.executable, "-m", "hearth.cli", "run", "Write a very long story about dragons.", "-n", "2000",
         "--temp", "0.8", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    first = proc.stdout.read(40)  # the answer has started streaming
    assert first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err
    assert len(first + rest) > 40
