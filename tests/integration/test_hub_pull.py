"""`hearth pull` against a local hub-compatible server, with the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hub_server import file_sha256, gguf_bytes, hearth_cli, hearth_process

from hearth.hub import store
from hearth.references import from_store
from hearth.references import resolve_model


@pytest.fixture
def tiny(hub, tmp_path):
    """org/Tiny-GGUF with a Q4_K_M, a Q8_0 and a README."""
    hub.add_repo("org/Tiny-GGUF", {
        "Tiny-Q4_K_M.gguf": gguf_bytes(tmp_path, "tiny-q4", 8192),
        "Tiny-Q8_0.gguf": gguf_bytes(tmp_path, "tiny-q8", 16384),
        "README.md": b"# Tiny\n",
    })
    return hub


def pull_json(*args: str) -> dict:
    result = hearth_cli("pull", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_pull_with_quant_downloads_that_file_into_the_hf_cache(tiny, tmp_path):
    record = pull_json("org/Tiny-GGUF:q8_0")
    assert record["model"] == "org/Tiny-GGUF:Q8_0"
    [file] = record["files"]
    path = tmp_path / "hf-cache" / "models--org--Tiny-GGUF" / "snapshots" / record["commit"] / "Tiny-Q8_0.gguf"
    assert file["path"] == str(path) and path.is_symlink()
    assert path.resolve().name == file["digest"] == file_sha256(path)
    assert file["downloaded_bytes"] == file["size_bytes"] == path.stat().st_size
    assert (tmp_path / "hf-cache" / "models--org--Tiny-GGUF" / "refs" / "main").read_text() == record["commit"]
    assert tiny.body_bytes("*Tiny-Q4_K_M.gguf") == 0  # only the asked-for quant


def test_pull_without_quant_chooses_and_says_why(tiny):
    result = hearth_cli("pull", "org/Tiny-GGUF")
    assert result.exit_code == 0, result.stderr
    assert "chose Q4_K_M (the preferred quant)" in result.stderr
    assert "org/Tiny-GGUF:Q4_K_M" in result.stdout


def test_second_pull_downloads_nothing(tiny):
    pull_json("org/Tiny-GGUF:Q4_K_M")
    sent = tiny.body_bytes()
    again = pull_json("org/Tiny-GGUF:Q4_K_M")
    assert again["downloaded_bytes"] == 0 and tiny.body_bytes() == sent


def test_split_gguf_is_pulled_whole_and_resolves_to_its_first_part(hub, tmp_path):
    parts = {f"Big-Q4_K_M-0000{i}-of-00003.gguf": gguf_bytes(tmp_path, f"big-{i}", 4096) for i in (1, 2, 3)}
    hub.add_repo("org/Big-GGUF", {**parts, "Big-Q8_0.gguf": gguf_bytes(tmp_path, "big-q8", 4096)})
    record = pull_json("org/Big-GGUF:Q4_K_M")
    assert [f["name"] for f in record["files"]] == sorted(parts)
    resolved = resolve_model("org/Big-GGUF:Q4_K_M")
    assert resolved.source == "store" and resolved.path.name == "Big-Q4_K_M-00001-of-00003.gguf"
    shown = json.loads(hearth_cli("show", "org/Big-GGUF:Q4_K_M", "--json").stdout)
    assert len(shown["files"]) == 3 and shown["tensor_types"]["I8"] == 3


def test_revision_by_commit_and_unknown_revision(tiny):
    commit = pull_json("org/Tiny-GGUF:Q8_0")["commit"]
    assert pull_json("org/Tiny-GGUF:Q8_0", "--revision", commit)["commit"] == commit
    result = hearth_cli("pull", "org/Tiny-GGUF:Q8_0", "--revision", "v9")
    assert result.exit_code == 1 and "revision 'v9' not found" in result.stderr


def test_huggingface_hub_sees_what_hearth_pulled(tiny, tmp_path):
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    record = pull_json("org/Tiny-GGUF:Q4_K_M")
    cache = tmp_path / "hf-cache"
    assert try_to_load_from_cache("org/Tiny-GGUF", "Tiny-Q4_K_M.gguf", cache_dir=cache) == record["files"][0]["path"]
    before = tiny.body_bytes()
    path = hf_hub_download("org/Tiny-GGUF", "Tiny-Q4_K_M.gguf", cache_dir=cache, endpoint=tiny.url)
    assert path == record["files"][0]["path"] and tiny.body_bytes() == before  # no second copy


def test_hearth_sees_what_huggingface_hub_downloaded(tiny, tmp_path):
    from huggingface_hub import hf_hub_download

    hf_hub_download("org/Tiny-GGUF", "Tiny-Q8_0.gguf", cache_dir=tmp_path / "hf-cache", endpoint=tiny.url)
    sent = tiny.body_bytes()
    assert [m.reference for m in store.scan_store()] == ["org/Tiny-GGUF:Q8_0"]
    assert pull_json("org/Tiny-GGUF:Q8_0")["downloaded_bytes"] == 0 and tiny.body_bytes() == sent


def test_offline_mode_resolves_from_the_cache_in_a_fresh_process(tiny):
    pull_json("org/Tiny-GGUF:Q4_K_M")
    requests_before = len(tiny.requests)
    # A new process, so huggingface_hub's import-time constants see HF_HUB_OFFLINE too.
    offline = {"HF_HUB_OFFLINE": "1"}  # HF_ENDPOINT still names the live server: it must not be asked
    proc = hearth_process("show", "org/Tiny-GGUF", "--json", env=offline)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["model"] == "org/Tiny-GGUF:Q4_K_M"
    proc = hearth_process("pull", "org/Tiny-GGUF:Q4_K_M", env=offline)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "offline mode" in err and "using the cached copy" in err
    assert len(tiny.requests) == requests_before  # the hub was not asked anything


def test_resolve_reference_records_last_use_and_returns_none_when_absent(tiny):
    assert from_store("org/Tiny-GGUF") is None  # not pulled yet: other resolvers try
    pull_json("org/Tiny-GGUF:Q8_0")
    assert from_store("org/Tiny-GGUF:Q4_K_M") is None
    found = from_store("org/Tiny-GGUF")  # the only cached quant
    assert found.name == "org/Tiny-GGUF:Q8_0" and found.source == "store"
    assert "org/Tiny-GGUF:Q8_0" in store.last_used()


def test_private_repo_uses_hf_token_and_never_shows_it(hub, tmp_path, monkeypatch):
    secret, wrong = "hf_SeCrEtToKeN0123456789", "hf_WrOnGtOkEn9876543210"
    hub.add_repo("org/Private-GGUF", {"P-Q4_K_M.gguf": gguf_bytes(tmp_path, "private", 4096)}, token=secret)
    result = hearth_cli("pull", "org/Private-GGUF:Q4_K_M")
    assert result.exit_code == 1 and "not found" in result.stderr and "HF_TOKEN" in result.stderr
    monkeypatch.setenv("HF_TOKEN", wrong)
    result = hearth_cli("pull", "org/Private-GGUF:Q4_K_M", "--json")
    assert result.exit_code == 1
    assert wrong not in result.stdout + result.stderr
    monkeypatch.setenv("HF_TOKEN", secret)
    result = hearth_cli("pull", "org/Private-GGUF:Q4_K_M", "--json")
    assert result.exit_code == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    assert all(r.authorized for r in hub.downloads())
    listing = hearth_cli("list", "--json").stdout + hearth_cli("show", "org/Private-GGUF", "--json").stdout
    assert secret not in listing


def test_real_model_file_round_trip(hub, default_model_path):
    """The embedded SmolLM2 GGUF (98 MB) through the server: verified and readable afterwards."""
    hub.add_repo("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct.Q4_1.gguf": default_model_path})
    record = pull_json("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")
    assert record["quant"] == "Q4_1" and "largest file that fits" in record["reason"]
    path = record["files"][0]["path"]
    digest = hashlib.sha256(open(default_model_path, "rb").read()).hexdigest()
    assert os.path.basename(os.path.realpath(path)) == digest
    shown = json.loads(hearth_cli("show", record["model"], "--json").stdout)
    assert shown["architecture"] == "llama" and shown["layers"] == 30 and shown["chat_template"]
