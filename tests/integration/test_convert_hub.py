"""`hearth convert OWNER/REPO`: a Transformers checkpoint fetched from a local hub-compatible server
(real huggingface_hub client, hearth's verified download) into the HF cache, then converted.

The checkpoint is the tiny numpy-built llama of the convert unit tests: config.json,
tokenizer.json and one safetensors shard, beside a pickle file that must never be fetched.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("safetensors")
from hub_server import hearth_cli  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_convert_errors import write_checkpoint  # noqa: E402


@pytest.fixture
def checkpoint_repo(hub, tmp_path):
    folder = write_checkpoint(tmp_path / "tiny-llama")
    files = {p.name: p for p in folder.iterdir()}
    files["pytorch_model.bin"] = b"\x80\x04pickle that must not be fetched"
    files["README.md"] = b"# tiny llama\n"
    hub.add_repo("org/tiny-llama", files)
    return folder


def convert_json(*args: str) -> dict:
    result = hearth_cli("convert", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_repo_id_is_fetched_into_the_hf_cache_and_converts_like_the_local_folder(hub, checkpoint_repo, tmp_path):
    from_hub = convert_json("org/tiny-llama", "-o", str(tmp_path / "hub.gguf"), "--no-register")
    local = convert_json(str(checkpoint_repo), "-o", str(tmp_path / "local.gguf"), "--no-register", "--name", "tiny-llama")
    assert from_hub["gguf_arch"] == "llama" and from_hub["params"] == local["params"] > 0
    assert digest(from_hub["path"]) == digest(local["path"])  # same bytes: same tensors, vocab and metadata

    snapshots = tmp_path / "hf-cache" / "models--org--tiny-llama" / "snapshots"
    [snapshot] = snapshots.iterdir()
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (snapshot / "model.safetensors").resolve().name == digest(checkpoint_repo / "model.safetensors")
    assert hub.body_bytes("*pytorch_model.bin") == 0 and hub.body_bytes("*README.md") == 0


def test_converted_repo_runs_by_its_registered_name(hub, checkpoint_repo):
    report = convert_json("org/tiny-llama")
    assert report["registered"] and report["name"] == "tiny-llama"
    from hearth.references import resolve_model

    assert resolve_model("tiny-llama").path == Path(report["path"]).resolve()


def test_offline_conversion_uses_the_cached_snapshot(hub, checkpoint_repo, tmp_path, monkeypatch):
    convert_json("org/tiny-llama", "-o", str(tmp_path / "first.gguf"), "--no-register")
    sent = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = convert_json("org/tiny-llama", "-o", str(tmp_path / "second.gguf"), "--no-register")
    assert len(hub.requests) == sent  # nothing asked of the hub
    assert digest(again["path"]) == digest(tmp_path / "first.gguf")


def test_second_conversion_downloads_nothing(hub, checkpoint_repo, tmp_path):
    convert_json("org/tiny-llama", "-o", str(tmp_path / "a.gguf"), "--no-register")
    sent = hub.body_bytes()
    convert_json("org/tiny-llama", "-o", str(tmp_path / "b.gguf"), "--no-register")
    assert hub.body_bytes() == sent


def test_damaged_download_is_refused_and_nothing_is_written(hub, checkpoint_repo, tmp_path):
    hub.fail("wrong_bytes", "*model.safetensors", times=10)
    out = tmp_path / "bad.gguf"
    result = hearth_cli("convert", "org/tiny-llama", "-o", str(out), "--no-register")
    assert result.exit_code != 0 and "does not match the hub's sha256" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not out.exists() and list(tmp_path.glob("*.gguf")) == []


@pytest.mark.parametrize("repo,files,message", [
    ("org/missing", None, "not found"),
    ("org/pickle-only", {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"}, "no safetensors weights"),
])
def test_bad_repos_get_one_line_errors(hub, tmp_path, repo, files, message):
    if files:
        hub.add_repo(repo, files)
    result = hearth_cli("convert", repo, "-o", str(tmp_path / "x.gguf"))
    assert result.exit_code != 0 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert hub.body_bytes("*.bin") == 0 and not (tmp_path / "x.gguf").exists()


def test_unreachable_hub_without_a_cached_copy_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = hearth_cli("convert", "org/tiny-llama", "-o", str(tmp_path / "x.gguf"))
    assert result.exit_code != 0 and "not in the local cache" in result.stderr
    assert "Traceback" not in result.stderr
