"""`hearth serve`'s edges: the API key, the bounded queue, /health while loading, shutdown."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from serve_process import ENDLESS, ServerProcess, wait_for

MODEL = "SmolLM2-135M-Instruct.Q4_1"
KEY = "s3cret-key"


def endless_stream(base: str, headers: dict, max_tokens: int = 900) -> httpx.Response:
    """Open a streaming answer that runs to max_tokens (its grammar never lets it end)."""
    client = httpx.Client(timeout=120)
    request = client.build_request("POST", base + "/v1/chat/completions", headers=headers, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Write."}], "max_tokens": max_tokens,
        "stream": True, "grammar": ENDLESS, "temperature": 0.8})
    return client.send(request, stream=True)


@pytest.fixture(scope="module")
def guarded(default_model_path, tmp_path_factory):
    """One slot, one place in the queue, an API key from the environment."""
    process = ServerProcess(["-m", str(default_model_path), "--parallel", "1", "--queue", "1", "--ctx", "1024"],
                            tmp_path_factory.mktemp("serve"), env={"HEARTH_API_KEY": KEY})
    yield process
    assert process.stop() == 0, process.stderr


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_the_api_key_guards_every_endpoint_but_health(guarded):
    base = guarded.base
    assert httpx.get(base + "/health", timeout=30).status_code == 200
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            response = httpx.request(method, base + path, headers=headers, json={}, timeout=30)
            assert response.status_code == 401, (path, headers)
            assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(base + "/v1/models", headers=AUTH, timeout=30).status_code == 200
    client = openai.OpenAI(base_url=guarded.url, api_key=KEY, max_retries=0, timeout=60)
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4).choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url, api_key="nope", max_retries=0).models.list()


def test_past_the_queue_the_answer_is_503_with_retry_after(guarded):
    health = lambda: httpx.get(guarded.base + "/health", timeout=30).json()  # noqa: E731
    running = endless_stream(guarded.base, AUTH)
    queued = [None]
    waiter = threading.Thread(target=lambda: queued.__setitem__(0, endless_stream(guarded.base, AUTH, 8)))
    waiter.start()
    try:
        wait_for(lambda: (s := health())["running"] == 1 and s["queued"] == 1)
        response = httpx.post(guarded.base + "/v1/chat/completions", headers=AUTH, timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "server_busy"
        assert health()["rejected"] == 1
    finally:
        running.close()  # the running client leaves: its slot goes to the queued one
    waiter.join(60)
    text = "".join(line for line in queued[0].iter_lines())
    queued[0].close()
    assert text.endswith("data: [DONE]")
    wait_for(lambda: health()["running"] == 0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_work_in_flight_and_exits_0(default_model_path, tmp_path, sig):
    """/health is 503 until the model is loaded; then a signal mid-answer ends the stream with an
    error event, and the process exits 0 with no traceback."""
    port = free_port()
    answers: list[int] = []
    polling = threading.Event()

    def poll_health() -> None:
        while not polling.is_set():
            try:
                answers.append(httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code)
            except httpx.TransportError:
                pass
            time.sleep(0.01)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        server = ServerProcess(["-m", str(default_model_path), "--parallel", "2", "--ctx", "1024", "--port", str(port)],
                               tmp_path)
    finally:
        polling.set()
        poller.join()
    # 503 while the model loads, then 200: never ready before loaded, never back to loading
    assert set(answers) <= {200, 503} and answers == sorted(answers, reverse=True), answers
    assert httpx.get(server.base + "/health", timeout=30).status_code == 200
    stream = endless_stream(server.base, {})
    lines = stream.iter_lines()
    assert next(line for line in lines if line.startswith("data:"))  # the answer has begun
    server.proc.send_signal(sig)
    rest = [line for line in lines if line.startswith("data:")]
    stream.close()
    assert rest and "shutting down" in rest[-1] and "[DONE]" not in rest[-1]
    assert server.stop(timeout=60) == 0, server.stderr
    assert "Traceback" not in server.stderr


def test_a_port_in_use_is_one_line_and_exit_1(default_model_path, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hearth.cli", "serve", "-m", str(default_model_path),
                               "--port", str(port)], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Traceback" not in done.stderr


def test_an_unknown_model_is_one_line_and_exit_1(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hearth.cli", "serve", "-m", str(tmp_path / "nope.gguf"),
                           "--port", "0"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "model file not found" in done.stderr and "Traceback" not in done.stderr


def test_a_public_address_without_a_key_is_warned_about(default_model_path, tmp_path):
    server = ServerProcess(["-m", str(default_model_path), "--host", "0.0.0.0", "--parallel", "1", "--ctx", "512"],
                           tmp_path, listening_host="0.0.0.0")
    assert "warning: listening on 0.0.0.0" in server.stderr and "without an API key" in server.stderr
    assert server.stop() == 0


def test_with_v_each_request_is_logged_with_its_prompts_beginning(default_model_path, tmp_path):
    """-v: one line per request with the prompt's beginning (without -v nothing is logged of the
    prompt: test_bad_requests_never_hurt_the_server_and_log_no_prompt)."""
    server = ServerProcess(["-m", str(default_model_path), "--parallel", "1", "--ctx", "512", "-v"], tmp_path)
    try:
        secret = "quokka-lantern-9182"
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Say {secret}."}],
                                       max_tokens=2)
        line = wait_for(lambda: next((l for l in server.lines if secret in l), None), timeout=30)
        assert "chat n=1" in line and "prompt=" in line
    finally:
        assert server.stop() == 0, server.stderr
