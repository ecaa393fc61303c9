"""A disk that fills up during pull, convert or quantize: one clear line, nothing half-written
under a final name, the cache still verifies, and a retry with room completes.

Two real faults, no mocks:
- a real full disk: a small tmpfs mounted for the test (root only; the tests say why they skip
  where mounting is not allowed), filled by "another program" part-way through the write (the
  progress callback writes a filler file until the kernel answers ENOSPC), then emptied again;
- the kernel's file-size limit (RLIMIT_FSIZE) in a `hearth` subprocess: its writes fail with
  EFBIG at a chosen size. This needs no privileges, so the same paths are tested everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
from hub_server import file_sha256, gguf_bytes, hearth_cli, hearth_process  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_convert_errors import VOCAB, write_checkpoint  # noqa: E402

from hearth.errors import DiskSpaceError  # noqa: E402
from hearth.hub import pull, store  # noqa: E402
from hearth.paths import atomic_write  # noqa: E402
from hearth.quantize.convert import convert_checkpoint  # noqa: E402
from hearth.quantize.quantize import quantize_file  # noqa: E402
from hearth.runtime.gguf_file import read_gguf  # noqa: E402

DISK_BYTES = 32 << 20  # passes every pre-check here (convert and quantize reserve 16 MB for metadata)
DISK_INODES = 256  # few enough to use up: a disk out of inodes is full too (ENOSPC on creating a file)
BIG = 3 << 20  # the GGUF that does not fit once the disk is filled
LIMIT = 1 << 20  # RLIMIT_FSIZE for the subprocess tests


class SmallDisk:
    """A tmpfs of DISK_BYTES and DISK_INODES at `path`; `fill()` takes every free byte (`use_up_inodes()`
    every free inode), `make_room()` gives them back."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / ".filler"
        self.inodes = path / ".inodes"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command: the real-full-disk tests need a small tmpfs")
        options = f"size={DISK_BYTES},nr_inodes={DISK_INODES},mode=0755"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "hearth-test-disk",
                               str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[0]
            pytest.skip(f"cannot mount a tmpfs here ({why}): the real-full-disk tests need root (CAP_SYS_ADMIN); "
                        "the RLIMIT_FSIZE tests cover the same code without it")

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)  # still busy: detach it

    def fill(self) -> None:
        """Write until the kernel says ENOSPC, as another program filling the disk would."""
        block = b"\xff" * (256 << 10)
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            while True:  # a write that fits only in part returns short; the next one fails
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
        finally:
            os.close(fd)
        assert shutil.disk_usage(self.path).free == 0

    def use_up_inodes(self) -> None:
        self.inodes.mkdir()
        for i in range(DISK_INODES + 1):
            try:
                (self.inodes / str(i)).touch()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
        raise AssertionError("the inodes never ran out")

    def make_room(self) -> None:
        if self.filler.exists():
            self.filler.unlink()
        if self.inodes.exists():
            shutil.rmtree(self.inodes)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "small-disk")
    disk.mount()
    try:
        yield disk
    finally:
        disk.unmount()


class FillsDiskMidway:
    """A pull observer (or progress callback) that fills the disk once `after` bytes went by."""

    def __init__(self, disk: SmallDisk, after: int):
        self.disk, self.after, self.seen, self.filled = disk, after, 0, False

    def note(self, message: str) -> None:
        pass

    def file_started(self, name: str, total: int, done: int) -> None:
        pass

    def file_advanced(self, n_bytes: int) -> None:
        self.seen += n_bytes
        if self.seen >= self.after and not self.filled:
            self.disk.fill()
            self.filled = True

    def __call__(self, *progress) -> None:  # convert's and quantize's progress callbacks
        if not self.filled:
            self.disk.fill()
            self.filled = True


def only_error_line(stderr: str) -> str:
    """The single `error:` line of a failed command (a `hint:` line may follow), never a traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def verify_ok() -> dict:
    result = hearth_cli("verify", "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def with_file_size_limit(limit: int):
    """preexec_fn for a subprocess: writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ)."""
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.fixture
def repo(hub, tmp_path):
    """org/M-GGUF: a small Q8_0 and a BIG Q4_K_M."""
    big = gguf_bytes(tmp_path, "big", BIG)
    hub.add_repo("org/M-GGUF", {"M-Q4_K_M.gguf": big, "M-Q8_0.gguf": gguf_bytes(tmp_path, "small", 4096)})
    return big


def repo_dir() -> Path:
    return store.hub_cache_dir() / "models--org--M-GGUF"


def assert_nothing_under_the_final_name(big: Path) -> Path:
    """Only a resumable partial of the big file: no blob, no snapshot link. Returns the partial."""
    [partial] = (repo_dir() / "blobs").glob("*.incomplete")
    assert partial.name == file_sha256(big) + ".incomplete"
    assert not (repo_dir() / "blobs" / file_sha256(big)).exists()
    assert not list((repo_dir() / "snapshots").rglob("M-Q4_K_M.gguf"))
    return partial


def assert_retry_completes(big: Path, partial_size: int, hub) -> None:
    before = hub.body_bytes()
    rerun = hearth_cli("pull", "org/M-GGUF:Q4_K_M", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert json.loads(rerun.stdout)["files"][0]["resumed_from"] == partial_size
    assert hub.body_bytes() - before == big.stat().st_size - partial_size  # only the rest was sent
    assert not list((repo_dir() / "blobs").glob("*.incomplete"))
    report = verify_ok()
    assert {(f["model"], f["status"]) for f in report["files"]} == {("org/M-GGUF:Q8_0", "ok"),
                                                                  ("org/M-GGUF:Q4_K_M", "ok")}


# -- pull ------------------------------------------------------------------------------------------
def test_pull_onto_a_disk_that_fills_keeps_a_resumable_partial(repo, hub, small_disk, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(small_disk.path / "hf-cache"))
    assert hearth_cli("pull", "org/M-GGUF:Q8_0").exit_code == 0
    with pytest.raises(DiskSpaceError) as err:
        pull.pull_model("org/M-GGUF:Q4_K_M", observer=FillsDiskMidway(small_disk, after=1 << 20))
    message = str(err.value)
    assert message.startswith("the disk is full: could not write M-Q4_K_M.gguf into ") and "\n" not in message
    assert "kept to resume" in message and "hearth du" in err.value.hint
    partial = assert_nothing_under_the_final_name(repo)
    assert 0 < partial.stat().st_size < repo.stat().st_size
    assert partial.read_bytes() == repo.read_bytes()[:partial.stat().st_size]  # a true prefix: resumable
    assert [f["status"] for f in verify_ok()["files"]] == ["ok"]  # the cache still verifies
    small_disk.make_room()
    assert_retry_completes(repo, partial.stat().st_size, hub)


def test_pull_over_the_file_size_limit_is_one_line_then_resumes(repo, hub, tmp_path):
    """A real kernel limit in a `hearth pull` process: EFBIG after exactly LIMIT bytes of the blob."""
    assert hearth_cli("pull", "org/M-GGUF:Q8_0").exit_code == 0
    proc = hearth_process("pull", "org/M-GGUF:Q4_K_M", preexec_fn=with_file_size_limit(LIMIT))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == DiskSpaceError.exit_code, stderr
    line = only_error_line(stderr)
    assert "file-size limit: could not write M-Q4_K_M.gguf" in line and f"{LIMIT:,} of" in line
    partial = assert_nothing_under_the_final_name(repo)
    assert partial.stat().st_size == LIMIT
    assert [f["status"] for f in verify_ok()["files"]] == ["ok"]
    assert_retry_completes(repo, LIMIT, hub)


# -- convert ---------------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path):
    """The numpy-built tiny llama of the convert unit tests, with a larger vocabulary (~0.6 MB F32)."""
    folder = write_checkpoint(tmp_path / "ckpt", shapes={"model.embed_tokens.weight": (VOCAB * 8, 32),
                                                         "lm_head.weight": (VOCAB * 8, 32)})
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = VOCAB * 8
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_convert_onto_a_disk_that_fills_leaves_nothing(checkpoint, small_disk):
    out = small_disk.path / "models" / "tiny-F32.gguf"
    with pytest.raises(DiskSpaceError) as err:
        convert_checkpoint(checkpoint, out, "f32", on_progress=FillsDiskMidway(small_disk, after=0))
    assert str(err.value) == f"the disk is full: could not write {out}; nothing was left behind"
    assert list(out.parent.iterdir()) == []
    small_disk.make_room()
    result = convert_checkpoint(checkpoint, out, "f32")
    assert read_gguf(result.path).file_size == out.stat().st_size
    assert list(out.parent.iterdir()) == [out]


# -- quantize --------------------------------------------------------------------------------------
@pytest.fixture
def f32_model(checkpoint, tmp_path):
    return convert_checkpoint(checkpoint, tmp_path / "tiny-F32.gguf", "f32").path


def test_quantize_onto_a_disk_that_fills_leaves_nothing(f32_model, small_disk):
    """llama.cpp writes the file itself: its failure is recognised as the full disk it was."""
    out = small_disk.path / "models" / "tiny-Q8_0.gguf"
    out.parent.mkdir()
    with pytest.raises(DiskSpaceError) as err:
        quantize_file(f32_model, "Q8_0", out, threads=1, on_progress=FillsDiskMidway(small_disk, after=0))
    assert str(err.value) == f"the disk is full: llama.cpp could not write {out}; nothing was left behind"
    assert list(out.parent.iterdir()) == []
    small_disk.make_room()
    result = quantize_file(f32_model, "Q8_0", out, threads=1)
    assert read_gguf(result.path).file_size == out.stat().st_size
    assert list(out.parent.iterdir()) == [out]


def test_quantize_over_the_file_size_limit_is_one_line(f32_model, tmp_path):
    out = tmp_path / "out" / "tiny-Q8_0.gguf"
    out.parent.mkdir()
    limit = 64 << 10  # the Q8_0 file is ~0.2 MB
    proc = hearth_process("quantize", str(f32_model), "Q8_0", "-o", str(out), "--threads", "1",
                          preexec_fn=with_file_size_limit(limit))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == DiskSpaceError.exit_code, stderr
    assert only_error_line(stderr) == (f"error: the file would exceed the file-size limit: llama.cpp could not "
                                       f"write {out}; nothing was left behind")
    assert list(out.parent.iterdir()) == []


def test_convert_and_quantize_on_a_disk_out_of_inodes(checkpoint, small_disk):
    """No file can even be created: `convert -q` fails making its staging folder, one line."""
    out = small_disk.path / "models" / "tiny-Q8_0.gguf"
    out.parent.mkdir()
    small_disk.use_up_inodes()
    result = hearth_cli("convert", str(checkpoint), "-o", str(out), "-q", "Q8_0", "--no-register")
    assert result.exit_code == DiskSpaceError.exit_code
    assert only_error_line(result.stderr).startswith(f"error: the disk is full: could not write {out.parent}/")
    result = hearth_cli("convert", str(checkpoint), "-o", str(out), "--outtype", "q8_0", "--no-register")
    assert only_error_line(result.stderr) == f"error: the disk is full: could not write {out}"
    assert list(out.parent.iterdir()) == []
    small_disk.make_room()
    assert hearth_cli("convert", str(checkpoint), "-o", str(out), "-q", "Q8_0", "--no-register").exit_code == 0
    assert list(out.parent.iterdir()) == [out]


# -- batch -----------------------------------------------------------------------------------------
def test_batch_onto_a_full_disk_is_one_line_then_the_rerun_goes_on(small_disk, tmp_path):
    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": "Hi", "max_tokens": 2}) + "\n" for i in range(2)))
    out = small_disk.path / "answers.jsonl"
    small_disk.fill()
    result = hearth_cli("batch", str(prompts), "-o", str(out), "--parallel", "1")
    assert result.exit_code == DiskSpaceError.exit_code
    assert only_error_line(result.stderr) == f"error: the disk is full: could not write {out}"
    small_disk.make_room()
    rerun = hearth_cli("batch", str(prompts), "-o", str(out), "--parallel", "1")
    assert rerun.exit_code == 0, rerun.stderr
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == [0, 1]


# -- small writes (atomic_write) -------------------------------------------------------------------
def test_a_small_write_on_a_full_disk_keeps_the_old_file(small_disk, monkeypatch):
    target = small_disk.path / "state" / "settings.json"
    with atomic_write(target) as handle:
        handle.write('{"old": true}')
    small_disk.fill()
    with pytest.raises(DiskSpaceError) as err:
        with atomic_write(target) as handle:
            handle.write('{"new": true}' * 1000)
    assert str(err.value) == f"the disk is full: could not write {target}"
    assert target.read_text() == '{"old": true}' and list(target.parent.iterdir()) == [target]
    # `hearth run REPO` notes when a model was last used; a full disk must not stop it from running
    monkeypatch.setenv("HEARTH_HOME", str(small_disk.path / "state"))
    store.record_use("org/M-GGUF:Q8_0")
    assert list(target.parent.iterdir()) == [target]


def test_a_small_write_over_the_file_size_limit_keeps_the_old_file(tmp_path):
    target = tmp_path / "state" / "settings.json"
    with atomic_write(target) as handle:
        handle.write('{"old": true}')
    script = ("import sys\nfrom hearth.paths import atomic_write\n"
              "with atomic_write(sys.argv[1]) as handle:\n    handle.write('x' * 100_000)\n")
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=60,
                          preexec_fn=with_file_size_limit(64 << 10))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (f"hearth.errors.DiskSpaceError: the file would exceed the "
                                                    f"file-size limit: could not write {target}")
    assert target.read_text() == '{"old": true}' and list(target.parent.iterdir()) == [target]
