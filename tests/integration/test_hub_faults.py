"""Bad input and faults: each is a test against the local hub server (which fails on purpose)."""

from __future__ import annotations

import signal
import time

import pytest
from hub_server import file_sha256, gguf_bytes, hearth_cli, hearth_process

from hearth.errors import HubError, IntegrityError
from hearth.hub import pull

FILLER = 2 << 20  # big enough to cut in the middle, small enough to stay fast


@pytest.fixture
def repo(hub, tmp_path):
    source = gguf_bytes(tmp_path, "faulty", FILLER)
    hub.add_repo("org/M-GGUF", {"M-Q4_K_M.gguf": source, "M-Q8_0.gguf": gguf_bytes(tmp_path, "faulty-q8", 4096)})
    return source


@pytest.fixture
def size(repo):
    return repo.stat().st_size


def blobs_dir(tmp_path):
    return tmp_path / "hf-cache" / "models--org--M-GGUF" / "blobs"


@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(pull, "RETRY_BASE_S", 0.01)


def test_unknown_repo(hub):
    result = hearth_cli("pull", "org/Nope-GGUF")
    assert result.exit_code == 1
    assert "repository org/Nope-GGUF not found" in result.stderr


def test_unknown_quant_lists_the_ones_that_exist(repo):
    result = hearth_cli("pull", "org/M-GGUF:Q5_K_M")
    assert result.exit_code == 1
    assert "no Q5_K_M in org/M-GGUF; it has: Q4_K_M, Q8_0" in result.stderr


def test_repo_without_gguf_suggests_convert(hub):
    hub.add_repo("org/Plain", {"model.safetensors": b"\0" * 64, "config.json": b"{}"})
    result = hearth_cli("pull", "org/Plain")
    assert result.exit_code == 1
    assert "org/Plain has no GGUF files" in result.stderr and "hearth convert org/Plain" in result.stderr


def test_no_network_says_so_then_uses_the_cache(repo, hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = hearth_cli("pull", "org/M-GGUF:Q8_0")
    assert result.exit_code == 1
    assert "cannot reach the hub at http://127.0.0.1:9" in result.stderr and "not in the local cache" in result.stderr
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert hearth_cli("pull", "org/M-GGUF:Q8_0").exit_code == 0
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = hearth_cli("pull", "org/M-GGUF:Q8_0")
    assert result.exit_code == 0, result.stderr
    assert "cannot reach the hub" in result.stderr and "using the cached copy" in result.stderr
    assert "org/M-GGUF:Q8_0" in result.stdout


def test_hub_500_on_listing(repo, hub):
    hub.fail("status", "/api/models/*", status=500)
    result = hearth_cli("pull", "org/M-GGUF:Q4_K_M")
    assert result.exit_code == 1 and "answered HTTP 500" in result.stderr


def test_500_during_download_is_retried(repo, size, hub, quick_retries):
    hub.fail("status", "*/resolve/*", status=500, times=2)
    result = pull.pull_model("org/M-GGUF:Q4_K_M")
    assert result.downloaded_bytes == size and hub.body_bytes() == size


def test_404_on_a_listed_file(repo, hub):
    hub.fail("status", "*/resolve/*", status=404)
    result = hearth_cli("pull", "org/M-GGUF:Q4_K_M")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


def test_disk_too_small_is_refused_before_downloading(hub, tmp_path):
    petabyte = 1 << 50
    hub.add_repo("org/Huge-GGUF", {"Huge-Q4_K_M.gguf": gguf_bytes(tmp_path, "huge")},
                 advertised_sizes={"Huge-Q4_K_M.gguf": petabyte})
    result = hearth_cli("pull", "org/Huge-GGUF:Q4_K_M")
    assert result.exit_code == 1
    assert "not enough disk space" in result.stderr and f"{petabyte:,} bytes" in result.stderr
    assert "free" in result.stderr and not hub.downloads()


def test_cut_at_half_resumes_without_restarting(repo, size, hub):
    hub.fail("cut", fraction=0.5)
    result = pull.pull_model("org/M-GGUF:Q4_K_M")
    first, second = hub.downloads()
    assert first.body_bytes == size // 2 and second.range_start == size // 2
    assert hub.body_bytes() == size  # every byte sent once
    assert file_sha256(result.files[0].path) == file_sha256(repo)


def test_cut_then_hub_down_fails_and_the_rerun_resumes(repo, size, hub, tmp_path, quick_retries):
    hub.fail("cut", fraction=0.5)
    hub.fail("status", "*/resolve/*", status=503, times=pull.RETRIES + 1)
    result = hearth_cli("pull", "org/M-GGUF:Q4_K_M")
    assert result.exit_code == 1 and "stopped at" in result.stderr and "resume" in result.stderr
    partial = next(blobs_dir(tmp_path).glob("*.incomplete"))
    assert partial.stat().st_size == size // 2
    rerun = hearth_cli("pull", "org/M-GGUF:Q4_K_M", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert hub.downloads()[-1].range_start == size // 2 and hub.body_bytes() == size
    assert f'"resumed_from": {size // 2}' in rerun.stdout


@pytest.mark.slow
def test_ctrl_c_mid_download_then_rerun_resumes(repo, size, hub, tmp_path):
    # The server stalls after half the file for longer than the whole test, and the client's read
    # timeout is longer still: until the signal the client provably has work left, however slow
    # or busy the machine (with the default 10 s timeout a starved test let it resume by itself).
    hub.fail("stall", fraction=0.5, seconds=300)
    proc = hearth_process("pull", "org/M-GGUF:Q4_K_M", env={"HF_HUB_DOWNLOAD_TIMEOUT": "600"})
    # wait until the client has written the half the server sent (not a fixed sleep: under load
    # the client can take longer than any fixed pause to write what it received)
    deadline = time.time() + 120
    while True:
        partial = list(blobs_dir(tmp_path).glob("*.incomplete"))
        if hub.body_bytes() >= size // 2 and partial and partial[0].stat().st_size >= size // 2:
            break
        assert proc.poll() is None and time.time() < deadline, "the pull never reached the stall"
        time.sleep(0.05)
    assert proc.poll() is None  # still mid-download: the signal lands on work left to do
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    kept = next(blobs_dir(tmp_path).glob("*.incomplete")).stat().st_size
    assert kept == size // 2, f"the partial file holds {kept} bytes, not {size // 2}; stderr: {err}"
    rerun = hearth_cli("pull", "org/M-GGUF:Q4_K_M")
    assert rerun.exit_code == 0, rerun.stderr
    ranges = [d.range_start for d in hub.downloads()]
    assert ranges[-1] == size // 2 and hub.body_bytes() == size, (ranges, hub.body_bytes(), size)
    assert not list(blobs_dir(tmp_path).glob("*.incomplete"))


def test_stall_times_out_and_resumes(repo, size, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    hub.fail("stall", fraction=0.5, seconds=30)
    started = time.monotonic()
    result = pull.pull_model("org/M-GGUF:Q4_K_M")
    assert time.monotonic() - started < 10
    assert result.files[0].downloaded_bytes == size and hub.body_bytes() == size
    assert hub.downloads()[-1].range_start == size // 2


def test_wrong_bytes_are_refused_and_removed(repo, hub, tmp_path):
    hub.fail("wrong_bytes")
    result = hearth_cli("pull", "org/M-GGUF:Q4_K_M")
    assert result.exit_code == 1
    assert "does not match the hub's sha256" in result.stderr and "removed" in result.stderr
    assert not any(blobs_dir(tmp_path).iterdir())  # neither a blob nor a partial file
    assert not (tmp_path / "hf-cache" / "models--org--M-GGUF" / "snapshots").exists()
    assert hearth_cli("pull", "org/M-GGUF:Q4_K_M").exit_code == 0  # the next try is clean


def test_file_name_escaping_the_cache_is_refused(hub, tmp_path):
    hub.add_repo("org/Evil-GGUF", {"Good-Q4_K_M.gguf": gguf_bytes(tmp_path, "good")},
                 extra_siblings=["../../../escape-Q8_0.gguf"])
    with pytest.raises(IntegrityError, match="escapes the cache"):
        pull.pull_model("org/Evil-GGUF:Q4_K_M")
    assert not hub.downloads()
    assert not list(tmp_path.rglob("escape-Q8_0.gguf"))


@pytest.mark.slow
def test_two_pulls_at_once_never_corrupt_the_blob(hub, tmp_path):
    source = gguf_bytes(tmp_path, "shared", FILLER)
    size = source.stat().st_size
    hub.add_repo("org/Slow-GGUF", {"S-Q4_K_M.gguf": source}, throttle_bytes_per_s=size // 3)
    procs = [hearth_process("pull", "org/Slow-GGUF:Q4_K_M") for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert any("waiting for another download" in err for _, err in outputs)  # one waited for the other
    assert hub.body_bytes() == size
    [blob] = (tmp_path / "hf-cache" / "models--org--Slow-GGUF" / "blobs").iterdir()
    assert blob.name == file_sha256(blob) == file_sha256(source)


def test_reference_that_is_not_a_repo(hub):
    with pytest.raises(Exception) as err:
        pull.pull_model("not a repo")
    assert "not a hub reference" in str(err.value)
    assert not isinstance(err.value, HubError)
