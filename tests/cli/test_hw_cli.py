"""`hearth hw` and `hearth plan`: JSON on stdout, one-line errors on stderr, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hearth.cli.app import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_hw_json_shape():
    result = invoke("hw", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info) >= {"cpu_model", "physical_cores", "logical_cores", "simd_features", "ram_total_bytes",
                         "ram_available_bytes", "gpus", "backend", "system"}
    assert 1 <= info["physical_cores"] <= info["logical_cores"]
    assert 0 < info["ram_available_bytes"] <= info["ram_total_bytes"]
    assert isinstance(info["simd_features"], list) and isinstance(info["gpus"], list)
    assert isinstance(info["backend"]["gpu_offload"], bool)
    assert "system_info" in info["backend"]
    for gpu in info["gpus"]:
        assert set(gpu) >= {"name", "vendor", "memory_total_bytes", "memory_free_bytes", "backend"}


def test_hw_text():
    result = invoke("hw")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["cpu", "simd", "ram", "gpu"]
    assert "gpu offload" in result.stdout and "llama-cpp-python" in result.stdout
    assert "cpu weights" in result.stdout  # which of llama.cpp's CPU weight buffers loads will use


def test_hw_names_the_cpu_weight_buffers_chosen(monkeypatch):
    monkeypatch.setenv("HEARTH_CPU_REPACK", "0")
    assert "cpu weights  CPU weight repacking off (HEARTH_CPU_REPACK=0)" in invoke("hw").stdout
    monkeypatch.setenv("HEARTH_CPU_REPACK", "repack")
    assert "cpu weights  repacked rows without AMX (HEARTH_CPU_REPACK=repack)" in invoke("hw").stdout


def test_plan_default_json():
    result = invoke("plan", "default", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["model"]["reference"] == "default"
    assert plan["model"]["architecture"] == "llama"
    assert plan["n_ctx"] == 4096 and plan["n_seq"] == 1
    assert plan["weights_bytes"] == 96_576_768
    assert plan["kv_cache_bytes"] == 30 * 3 * (64 + 64) * 2 * 4096  # 90 MiB, as llama.cpp logs it
    assert plan["total_bytes"] == plan["weights_bytes"] + plan["kv_cache_bytes"] + plan["compute_bytes"]
    hw = json.loads(invoke("hw", "--json").stdout)
    assert plan["n_threads"] == hw["physical_cores"]
    assert any(reason.startswith("context 4096: default") for reason in plan["reasons"])
    assert result.stderr == ""


def test_plan_text_has_table_and_reasons():
    result = invoke("plan")
    assert result.exit_code == 0, result.output
    for word in ("context", "kv cache", "weights", "ram needed", "why:", "one per physical core"):
        assert word in result.stdout


def test_plan_ctx_above_trained_warns_on_stderr(gemma_model_path):
    result = invoke("plan", str(gemma_model_path), "--ctx", "40000", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_ctx"] == 40192
    assert "above the model's trained context of 32768" in result.stderr


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and text in lines[0]
    assert "Traceback" not in result.stderr


def test_plan_missing_file(tmp_path):
    result = invoke("plan", str(tmp_path / "nope.gguf"))
    _one_line_error(result, "model file not found")


def test_plan_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("these are not the weights you are looking for\n")
    _one_line_error(invoke("plan", str(path)), "is not a GGUF file")


def test_plan_truncated_gguf(tmp_path, default_model_path):
    path = tmp_path / "cut.gguf"
    with open(default_model_path, "rb") as source:
        path.write_bytes(source.read(4 * 1024 * 1024))  # header intact, tensor data cut short
    _one_line_error(invoke("plan", str(path)), "truncated")


def test_plan_that_does_not_fit_names_the_shortfall():
    result = invoke("plan", "default", "--ctx", "100000000")
    _one_line_error(result, "does not fit")
    assert "GiB short" in result.stderr
    assert "hint:" in result.stderr


def test_plan_invalid_ctx_is_a_usage_error():
    result = invoke("plan", "default", "--ctx", "0")
    assert result.exit_code == 2


@pytest.mark.parametrize("command", ["hw", "plan"])
def test_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and f"hearth {command}" in result.stdout


def test_mounting_hw_imports_nothing_heavy():
    code = ("import sys, hearth.cli.app; "
            "heavy = {'llama_cpp', 'numpy', 'huggingface_hub', 'psutil'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
