"""`--lookup` and `--draft` in `hearth run` and `hearth chat`: the real program, real models."""

from __future__ import annotations

import json

QUOTE = ("Repeat this list exactly, one item per line: apples, pears, plums, cherries, apricots, "
         "peaches, grapes, figs, dates, lemons.")


def test_run_lookup_json_reports_drafts_and_the_cost_curve(hearth):
    plain = hearth("run", QUOTE, "--temp", "0", "-n", "40", "--json")
    done = hearth("run", QUOTE, "--temp", "0", "-n", "40", "--json", "--lookup")
    assert done.returncode == 0, done.stderr
    record, reference = json.loads(done.stdout), json.loads(plain.stdout)
    assert record["text"] == reference["text"]  # greedy: exactly plain decode's answer
    spec = record["timings"]["speculative"]
    assert spec["mode"] == "lookup"
    assert spec["steps"] > 0 and 0 <= spec["accepted"] <= spec["drafted"]
    assert sum(spec["draft_length"]["chosen"].values()) == spec["steps"]
    assert spec["draft_length"]["mean"] == round(spec["drafted"] / spec["steps"], 3)
    layout = spec["layout"]  # the drafts copied across other whitespace, a part of the above
    assert 0 <= layout["accepted"] <= layout["drafted"] <= spec["drafted"]
    assert layout["accepted"] <= spec["accepted"]
    curve = spec["cost_curve"]
    assert curve["widths"][0] == 1 and curve["relative"][0] == 1.0 and curve["exact_rows"] >= 1
    assert "speculative" not in reference["timings"]


def test_run_lookup_verbose_shows_curve_and_drafts(hearth):
    done = hearth("run", QUOTE, "--temp", "0", "-n", "24", "--lookup", "-v")
    assert done.returncode == 0, done.stderr
    assert "cost curve (" in done.stderr and "exact rows by KV position 48:" in done.stderr
    assert "speculative (lookup): drafted" in done.stderr
    assert done.stdout.strip()


def test_run_refuses_speculation_with_reasoning_or_both_kinds(hearth, default_model_path):
    done = hearth("run", "2+2?", "--lookup", "--samples", "2")
    assert done.returncode == 2 and "one answer at a time" in done.stderr and "Traceback" not in done.stderr
    both = hearth("run", "hi", "--lookup", "--draft", str(default_model_path))
    assert both.returncode == 2 and "not both" in both.stderr and both.stdout == ""


def test_run_draft_with_another_vocabulary_is_one_line(hearth, gemma_model_path):
    done = hearth("run", "hi", "--draft", str(gemma_model_path), "-n", "4")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not share" in errors[0] and "vocabulary" in errors[0]


def test_chat_lookup_slash_command_and_draft_errors(hearth, gemma_model_path):
    script = "\n".join(["/lookup on", QUOTE, "/show", f"/draft {gemma_model_path}", "/lookup off", "/show",
                        "Say hi."]) + "\n"
    done = hearth("chat", "--plain", "--temp", "0", "-n", "24", "-v", input=script)
    assert done.returncode == 0, done.stderr
    assert "speculative decoding: prompt lookup" in done.stderr
    assert "speculative (lookup): drafted" in done.stderr  # -v after the answer
    assert "does not share" in done.stderr  # the draft model was refused, the chat went on
    assert done.stderr.count("speculative  prompt lookup") == 1 and "speculative  off" in done.stderr
    assert len([line for line in done.stdout.splitlines() if line.strip()]) >= 2  # both answers


def test_chat_flag_and_draft_model(hearth, default_model_path):
    done = hearth("chat", "--plain", "--temp", "0", "-n", "16", "-v", "--draft", str(default_model_path),
                  input="/show\nName a fruit.\n")
    assert done.returncode == 0, done.stderr
    assert "draft model" in done.stderr and "speculative (draft): drafted" in done.stderr
