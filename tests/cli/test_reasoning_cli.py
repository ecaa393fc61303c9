"""Reasoning mode end to end on the embedded model: one prompt evaluation, K rows per decode
call, reproducible with a seed, and adaptive stopping that really stops."""

from __future__ import annotations

import json

import pytest

QUESTION = "Tom has 3 apples and gets 4 more. How many apples does he have?"


def run_json(hearth, *args):
    done = hearth("run", QUESTION, "--answer", "number", "-n", "60", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_fixed_k_decodes_all_samples_in_one_batch_and_is_reproducible(hearth):
    first = run_json(hearth, "--samples", "6", "--no-adaptive", "--seed", "7", "--vote", "majority")
    assert len(first["samples"]) == 6
    assert first["timings"]["prompt_evals"] == 1
    # the samples decode together, as many at once as this machine's cost curve decodes fastest
    assert 2 <= first["timings"]["max_rows_per_call"] <= 6
    assert first["tokens_total"] == sum(s["tokens"] for s in first["samples"])
    assert first["stopped_early"] is False
    voted = [s["answer"] for s in first["samples"] if s["answer"] is not None]
    if voted:  # the vote is the most common extracted answer
        assert first["votes"][first["answer"]]["count"] == max(voted.count(a) for a in set(voted))
    second = run_json(hearth, "--samples", "6", "--no-adaptive", "--seed", "7", "--vote", "majority")
    assert [s["text"] for s in first["samples"]] == [s["text"] for s in second["samples"]]
    assert first["answer"] == second["answer"]


def test_adaptive_stops_once_the_vote_is_settled(hearth):
    # near-greedy sampling: the samples agree, so the vote settles before all 8 are drawn
    result = run_json(hearth, "--samples", "8", "--temp", "0.05", "--seed", "3")
    assert result["stopped_early"] is True
    assert result["stop_reason"] in ("cannot_lose", "beta", "esc_window")  # agreeing samples: not cannot_settle
    finished = [s for s in result["samples"] if s["finish_reason"] in ("stop", "length", "answer")]
    assert len(finished) < 8
    assert result["votes"][result["answer"]]["count"] >= 3  # 3-0 or 3-1 at least (ESC 3, Beta 0.8)
    assert 1 <= result["live_samples"] <= 8  # the cost curve's choice (runtime/reasoning.parallel_for)
    # reasoning samples default to min-p 0 (the whole nucleus); the given temperature is kept
    assert result["sampling"] == {"temperature": 0.05, "top_k": 40, "top_p": 0.95, "min_p": 0.0}
    assert result["tokens_saved_est"] > 0


def test_text_output_prints_only_the_answer(hearth):
    done = hearth("run", QUESTION, "--answer", "number", "-n", "60", "--samples", "4", "--temp", "0.05", "--seed", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].lstrip("-").replace(".", "").isdigit()
    assert "votes" in done.stderr


def test_v_names_the_reasoning_prompt_chosen_for_the_model(hearth):
    done = hearth("run", QUESTION, "--answer", "number", "-n", "24", "--samples", "2", "--temp", "0.05", "-v")
    assert done.returncode == 0, done.stderr
    assert "reasoning prompt: hearth (hearth's own instruction" in done.stderr  # SmolLM2: no trained prompt known
    assert "of 2 samples decoded at once (adaptive" in done.stderr
    assert "sampling: temperature 0.05 · top-k 40 · top-p 0.95 · min-p 0.0" in done.stderr
