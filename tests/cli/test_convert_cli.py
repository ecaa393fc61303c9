"""`hearth convert / quantize / quality` through the CLI: JSON on stdout, exit codes, registration."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("numpy")
pytest.importorskip("safetensors")

from hearth.cli.app import app  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_convert_errors import write_checkpoint  # noqa: E402

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize("command", ["convert", "quantize", "quality"])
def test_help_has_examples(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Examples" in result.output


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "tiny-llama")


def test_convert_quantize_quality_by_name(checkpoint, tmp_path, isolated_home):
    converted = invoke("convert", str(checkpoint), "--json")
    assert converted.exit_code == 0, converted.output
    report = json.loads(converted.stdout)
    assert report["registered"] and report["type"] == "F16" and report["gguf_arch"] == "llama"
    assert Path(report["path"]).is_file() and str(isolated_home) in report["path"]

    quantized = invoke("quantize", "tiny-llama", "Q8_0", "--json")
    assert quantized.exit_code == 0, quantized.output
    q = json.loads(quantized.stdout)
    assert q["input_type"] == "F16" and q["type"] == "Q8_0" and q["output_bytes"] < q["input_bytes"]

    text = tmp_path / "text.txt"
    text.write_text("The lamps came on one by one along the river, and the town was quiet. " * 6)
    quality = invoke("quality", "tiny-llama:F16", "tiny-llama:Q8_0", "--text", str(text), "--ctx", "32", "--json")
    assert quality.exit_code == 0, quality.output
    figures = json.loads(quality.stdout)
    assert figures["tokens_scored"] > 0 and 0 <= figures["kld_mean"] < 0.1 and figures["top1_agreement"] > 0.5

    from hearth.references import resolve_model

    assert resolve_model("tiny-llama:Q8_0").path == Path(q["path"]).resolve()


def test_convert_with_quant_in_one_step(checkpoint, tmp_path):
    out = tmp_path / "one-step.gguf"
    result = invoke("convert", str(checkpoint), "-q", "Q8_0", "-o", str(out), "--no-register", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["type"] == "Q8_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-step.gguf", "tiny-llama"]


@pytest.mark.parametrize("args,code,message", [
    (["quantize", "{ckpt}.gguf", "Q4_K_X"], 2, "unknown quant type"),
    (["convert", "{tmp}/nowhere"], 1, "is not a model folder"),
    (["convert", "{ckpt}", "--outtype", "f8"], 2, "unknown output type"),
    (["quality", "{ckpt}.gguf", "{ckpt}.gguf"], 1, "not found"),
])
def test_errors_are_one_line_with_exit_codes(args, code, message, checkpoint, tmp_path):
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    result = invoke(*args)
    assert result.exit_code == code
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_existing_output_needs_force(checkpoint, tmp_path):
    out = tmp_path / "x.gguf"
    assert invoke("convert", str(checkpoint), "-o", str(out), "--no-register").exit_code == 0
    again = invoke("convert", str(checkpoint), "-o", str(out), "--no-register")
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke("convert", str(checkpoint), "-o", str(out), "--no-register", "--force").exit_code == 0
