"""The server the tests of this folder share (helpers in serve_process.py)."""

from __future__ import annotations

import pytest
from serve_process import ServerProcess


@pytest.fixture(scope="module")
def server(default_model_path, tmp_path_factory):
    """One server for a module's tests: 16 slots, 1024 tokens each."""
    process = ServerProcess(["-m", str(default_model_path), "--parallel", "16", "--ctx", "1024"],
                            tmp_path_factory.mktemp("serve"))
    yield process
    assert process.stop() == 0, process.stderr
    assert process.stdout == ""  # stdout is for data; a server prints none
    assert "Traceback" not in process.stderr
