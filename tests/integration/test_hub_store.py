"""`hearth list`, `show`, `rm`, `du`, `verify` on a cache filled through the local hub server."""

from __future__ import annotations

import json

import pytest
from hub_server import TEMPLATE, gguf_bytes, hearth_cli

from hearth.hub import store
from hearth.references import from_store


@pytest.fixture
def pulled(hub, tmp_path):
    """org/A-GGUF with Q4_K_M and Q8_0 pulled; its Q2_K is byte-identical to Q4_K_M (shared blob)."""
    q4 = gguf_bytes(tmp_path, "a-q4", 8192)
    hub.add_repo("org/A-GGUF", {"A-Q4_K_M.gguf": q4, "A-Q2_K.gguf": q4,
                                "A-Q8_0.gguf": gguf_bytes(tmp_path, "a-q8", 16384)})
    for quant in ("Q4_K_M", "Q8_0"):
        assert hearth_cli("pull", f"org/A-GGUF:{quant}").exit_code == 0
    return {"Q4_K_M": q4.stat().st_size, "Q8_0": (tmp_path / "gguf-src" / "a-q8.gguf").stat().st_size}


def cli_json(*args: str):
    result = hearth_cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_list(pulled):
    rows = cli_json("list")
    assert [r["model"] for r in rows] == ["org/A-GGUF:Q4_K_M", "org/A-GGUF:Q8_0"]
    first = rows[0]
    assert first["size_bytes"] == pulled["Q4_K_M"] and first["architecture"] == "llama"
    assert first["context_length"] == 2048 and first["parameters"] == 8 * 64 + 64 * 64 + 8192
    assert first["last_used"] is None and first["pulled_at"]
    from_store("org/A-GGUF:Q4_K_M")  # what `run` does
    assert cli_json("list")[0]["last_used"] is not None
    table = hearth_cli("list").stdout
    assert "org/A-GGUF:Q8_0" in table and "llama" in table and "never" in table


def test_list_empty_store():
    assert cli_json("list") == []
    result = hearth_cli("list")
    assert result.exit_code == 0 and result.stdout == "" and "hearth pull" in result.stderr


def test_show(pulled):
    shown = cli_json("show", "org/A-GGUF:q8_0")
    assert shown["model"] == "org/A-GGUF:Q8_0"
    assert shown["architecture"] == "llama" and shown["layers"] == 2 and shown["heads"] == 4 and shown["kv_heads"] == 2
    assert shown["tensor_types"] == {"F32": 1, "Q8_0": 1, "I8": 1}
    assert shown["chat_template"] == TEMPLATE and shown["license"] == "apache-2.0" and shown["name"] == "a-q8"
    text = hearth_cli("show", "org/A-GGUF:Q8_0").stdout
    assert "Q8_0 x1" in text and "apache-2.0" in text and "chat template" in text


def test_show_a_file_path_and_an_unknown_model(tmp_path):
    path = gguf_bytes(tmp_path, "loose", 256)
    assert cli_json("show", str(path))["files"] == [str(path)]
    result = hearth_cli("show", "org/Absent-GGUF:Q4_K_M")
    assert result.exit_code == 1 and "hearth pull org/Absent-GGUF:Q4_K_M" in result.stderr


def test_rm_one_quant_keeps_the_others(pulled, tmp_path):
    result = hearth_cli("rm", "org/A-GGUF:Q8_0", "-y", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": ["org/A-GGUF:Q8_0"], "bytes_freed": pulled["Q8_0"]}
    assert [m.reference for m in store.scan_store()] == ["org/A-GGUF:Q4_K_M"]
    assert len(list((tmp_path / "hf-cache" / "models--org--A-GGUF" / "blobs").iterdir())) == 1


def test_rm_keeps_a_blob_another_model_shares(pulled):
    assert hearth_cli("pull", "org/A-GGUF:Q2_K").exit_code == 0  # same bytes as Q4_K_M
    plan = store.plan_removal("org/A-GGUF:Q2_K")
    assert plan.links and plan.blobs == [] and plan.bytes_freed == 0
    assert hearth_cli("rm", "org/A-GGUF:Q2_K", "-y").exit_code == 0
    assert from_store("org/A-GGUF:Q4_K_M").path.is_file()


def test_rm_asks_first(pulled, tmp_path):
    result = hearth_cli("rm", "org/A-GGUF", input="n\n")
    assert result.exit_code == 1 and "nothing removed" in result.stderr
    assert len(store.scan_store()) == 2
    result = hearth_cli("rm", "org/A-GGUF", input="y\n")
    assert result.exit_code == 0, result.stderr
    assert "org/A-GGUF:Q4_K_M" in result.stderr  # the question names what goes
    assert store.scan_store() == [] and not (tmp_path / "hf-cache" / "models--org--A-GGUF").exists()


def test_rm_unknown_model(hub):
    result = hearth_cli("rm", "org/Absent-GGUF:Q4_K_M", "-y")
    assert result.exit_code == 1 and "not in the store" in result.stderr


def test_du(pulled, tmp_path):
    blobs = tmp_path / "hf-cache" / "models--org--A-GGUF" / "blobs"
    (blobs / ("f" * 64 + ".incomplete")).write_bytes(b"x" * 1000)  # an unfinished download
    usage = cli_json("du")
    assert usage["models"] == [{"model": "org/A-GGUF:Q4_K_M", "bytes": pulled["Q4_K_M"], "files": 1},
                               {"model": "org/A-GGUF:Q8_0", "bytes": pulled["Q8_0"], "files": 1}]
    assert usage["partial_bytes"] == 1000
    assert usage["total_bytes"] == pulled["Q4_K_M"] + pulled["Q8_0"] + 1000
    assert "TOTAL" in hearth_cli("du").stdout


def test_verify_finds_a_damaged_blob_and_remove_lets_pull_fetch_it_again(pulled, hub):
    assert cli_json("verify")["damaged"] == 0
    blob = from_store("org/A-GGUF:Q8_0").path.resolve()
    with open(blob, "r+b") as handle:  # flip one byte in the middle, same size
        handle.seek(blob.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = hearth_cli("verify", "--json")
    assert result.exit_code == 1 and "1 damaged" in result.stderr
    statuses = {f["model"]: f["status"] for f in json.loads(result.stdout)["files"]}
    assert statuses == {"org/A-GGUF:Q4_K_M": "ok", "org/A-GGUF:Q8_0": "damaged"}
    result = hearth_cli("verify", "org/A-GGUF:Q8_0", "--remove")
    assert result.exit_code == 1 and "hearth pull org/A-GGUF:Q8_0" in result.stderr
    assert not blob.exists()
    assert hearth_cli("pull", "org/A-GGUF:Q8_0").exit_code == 0
    assert hearth_cli("verify").exit_code == 0


def test_verify_a_model_not_in_the_store(hub):
    result = hearth_cli("verify", "org/Absent-GGUF")
    assert result.exit_code == 1 and "not in the store" in result.stderr


def test_every_store_command_has_help_with_examples():
    for name in ("pull", "list", "show", "rm", "du", "verify"):
        result = hearth_cli(name, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, name
