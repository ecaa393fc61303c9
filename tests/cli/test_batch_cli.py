"""`hearth batch` end to end: real program, embedded model, resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_batch_outputs_every_id_and_matches_single_runs(hearth, tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    prompts = ["Name a fruit.", "What is 3+4?", "Say hi.", "Name a planet.", "Give me a color.", "Write a haiku about rain."]
    write_jsonl(src, [{"id": f"q{i}", "prompt": p} for i, p in enumerate(prompts)])
    # 3 in flight for 6 lines: lines join as others finish (continuous batching)
    done = hearth("batch", str(src), "-o", str(dst), "--temp", "0", "-n", "24", "-p", "3")
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in read_jsonl(dst)}
    assert sorted(rows) == [f"q{i}" for i in range(6)]
    # Each batched sequence has a KV stream of its own, laid out as in a one-sequence context,
    # so greedy answers are exactly those of `hearth run` (with one shared KV buffer they were
    # not: the attention spans other sequences' cells and sums in another order).
    for i, prompt in enumerate(prompts):
        single = json.loads(hearth("run", prompt, "--temp", "0", "-n", "24", "--json").stdout)["text"]
        assert rows[f"q{i}"]["text"] == single, (prompt, rows[f"q{i}"]["text"], single)
    assert "6 lines" in done.stderr and "0 errors" in done.stderr


def test_bad_lines_get_error_records_and_the_rest_goes_on(hearth, tmp_path):
    src = tmp_path / "in.jsonl"
    long_prompt = "word " * 3000  # more than the whole context: (2 + 1 prefix) sequences × 768
    write_jsonl(src, [
        {"id": 1, "prompt": "Hello"},
        '{"id": 2, "prompt": ',
        {"id": 3},
        {"id": 1, "prompt": "again"},
        {"id": 5, "prompt": long_prompt},
        {"id": 6, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    ])
    done = hearth("batch", str(src), "--temp", "0", "-n", "6", "-p", "2")  # stdout output
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    by_id = {}
    for row in rows:
        by_id.setdefault(json.dumps(row["id"]), []).append(row)
    assert len(by_id["1"]) == 2 and sum("text" in r for r in by_id["1"]) == 1
    assert "text" in by_id["6"][0]
    assert "malformed JSON" in by_id["null"][0]["error"] and by_id["null"][0]["line"] == 2  # no id of its own
    assert "neither a prompt nor messages" in by_id["3"][0]["error"]
    assert any("duplicated id" in r.get("error", "") for r in by_id["1"])
    assert "context" in by_id["5"][0]["error"] and "--ctx" in by_id["5"][0]["error"]
    # each error record also warns on stderr, naming the line
    assert "warning: line 2: malformed JSON" in done.stderr
    assert "warning: line 3 (id 3): the line has neither a prompt nor messages" in done.stderr
    assert "warning: line 5 (id 5):" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_input_and_unwritable_output_fail_before_loading(hearth, tmp_path):
    missing = hearth("batch", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"prompt": "hi"}])
    bad_out = hearth("batch", str(src), "-o", str(tmp_path / "no" / "dir" / "out.jsonl"))
    assert bad_out.returncode == 2 and "does not exist" in bad_out.stderr


@pytest.mark.slow
def test_kill_then_resume_gives_every_id_once(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = [f"id-{i}" for i in range(16)]
    write_jsonl(src, [{"id": i, "prompt": f"Write a sentence about number {n}."} for n, i in enumerate(ids)])
    cmd = [sys.executable, "-m", "hearth.cli", "batch", str(src), "-o", str(dst), "-n", "16", "-p", "4", "--seed", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few results are written, then kill -9
        if dst.exists() and len(dst.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = dst.read_text().splitlines()
    assert 3 <= len(partial) < len(ids), "the kill should land mid-run"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stderr
    rows = read_jsonl(dst)
    assert sorted(r["id"] for r in rows) == sorted(ids)  # every id exactly once
    assert all("text" in r for r in rows)


@pytest.mark.slow
def test_ctrl_c_writes_no_half_answers_and_rerun_completes(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = [f"id-{i}" for i in range(24)]
    write_jsonl(src, [{"id": i, "prompt": f"Write a sentence about number {n}."} for n, i in enumerate(ids)])
    cmd = [sys.executable, "-m", "hearth.cli", "batch", str(src), "-o", str(dst), "-n", "24", "-p", "4", "--seed", "1"]
    partial = _interrupt_mid_run(cmd, dst, len(ids))
    # the answers cut short are not written (a rerun would otherwise keep half an answer)
    assert all(r["finish_reason"] in ("stop", "length") for r in partial)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_jsonl(dst)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)


def _interrupt_mid_run(cmd: list[str], dst, total: int) -> list[dict]:
    """Start `cmd`, let it write a few lines, then Ctrl-C it while it provably has lines left.

    The process is frozen (SIGSTOP) while its output is counted, so the count cannot go stale
    before the signal lands, however busy the machine; a run that got too far before the test
    looked (a starved test process) is started again from scratch.
    """
    for _attempt in range(3):
        dst.unlink(missing_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 180
        while not (dst.exists() and len(dst.read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "no output"
            time.sleep(0.05)
        proc.send_signal(signal.SIGSTOP)
        written = len(dst.read_text().splitlines())
        proc.send_signal(signal.SIGINT)  # pending until the process runs again
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
        if written > total - 2:
            continue  # nearly done before we looked: no proof of work left, try again
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "interrupted" in err
        partial = read_jsonl(dst)
        assert 3 <= len(partial) < total, "the interrupt should land mid-run"
        return partial
    raise AssertionError("the batch always finished before it could be interrupted")


def test_line_with_samples_votes(hearth, tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"id": "m", "prompt": "What is 2+3? Answer with a number.", "samples": 3, "max_tokens": 24,
                       "temperature": 0.7, "seed": 4}])
    done = hearth("batch", str(src), "-p", "4")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["id"] == "m" and "votes" in row and "answer" in row
    assert sum(row["votes"].values()) <= 3
    assert row["usage"]["completion_tokens"] > 0
