"""`hearth pull`: fetch a GGUF from the Hugging Face hub into the shared cache, resumably and verified.

huggingface_hub lists the repo (`HfApi.model_info`, which also gives each LFS file's sha256) and
provides the HTTP client; the transfer itself is hearth's because `hf_hub_download` neither
resumes (it discards a partial file) nor checks the sha256. Bytes go to
`blobs/<sha256>.incomplete`, are hashed as they are written (no second pass over the file), and
the file is renamed to `blobs/<sha256>` only when its hash matches. The lock is huggingface_hub's
own lock file for that blob, so hearth and other tools never write the same blob at once.

The endpoint, cache, token and offline mode are read from the environment at call time:
huggingface_hub reads its constants once, at import.
"""

from __future__ import annotations

import os
import queue

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from ..errors import DiskSpaceError, DoesNotFitError, HubError, IntegrityError, UsageError, no_room_reason
from ..paths import check_free_space as check_free_space_at
from ..paths import free_bytes
from . import store
from ..units import format_bytes
from .store import ModelFiles

PREFERRED_QUANTS = ("Q4_K_M", "Q8_0")
# Room for the KV cache and compute buffers on top of the weights, until the fit planner
# (hearth.runtime.plan) answers this properly.
FIT_HEADROOM = 1.2
CHUNK_BYTES = 8 << 20
RETRIES = 3  # per file, after a dropped connection / stall / 5xx; progress resets the count
RETRY_BASE_S = 0.2  # waits 0.4, 0.8, 1.6 s: a short outage is bridged, a long one ends in "rerun to resume"
_TRUTHY = ("1", "true", "yes", "on")


# -- choosing (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantChoice:
    model: ModelFiles
    reason: str


def fits(size: int, memory_budget_bytes: int) -> bool:
    return size * FIT_HEADROOM <= memory_budget_bytes


def choose_quant(candidates: Sequence[ModelFiles], memory_budget_bytes: int, must_fit: bool = True) -> QuantChoice:
    """The best quant that fits: Q4_K_M, else Q8_0, else the largest that fits; says why.

    With must_fit=False (choosing among files already on disk) the smallest is the fallback
    instead of an error.
    """
    if not candidates:
        raise ValueError("no candidates")
    budget = f"{format_bytes(memory_budget_bytes)} of available memory"
    present = {c.quant: c for c in candidates if c.quant}
    for rank, quant in enumerate(PREFERRED_QUANTS):
        model = present.get(quant)
        if model is None or not fits(model.size, memory_budget_bytes):
            continue
        skipped = [f"{q} does not fit" if q in present else f"no {q} in the repo" for q in PREFERRED_QUANTS[:rank]]
        why = "; ".join(skipped) if skipped else "the preferred quant"
        return QuantChoice(model, f"{quant} ({why}): {format_bytes(model.size)} fits in {budget}")
    fitting = [c for c in candidates if fits(c.size, memory_budget_bytes)]
    if fitting:
        model = max(fitting, key=lambda c: (c.size, c.label))
        skipped = [f"{q} does not fit" if q in present else f"no {q} in the repo" for q in PREFERRED_QUANTS]
        return QuantChoice(model, f"{model.label} ({'; '.join(skipped)}): the largest file that fits in {budget}, "
                                  f"{format_bytes(model.size)}")
    smallest = min(candidates, key=lambda c: (c.size, c.label))
    if not must_fit:
        return QuantChoice(smallest, f"{smallest.label}: the smallest file; none fits in {budget}")
    raise DoesNotFitError(
        f"no file in this repo fits in {budget} (smallest: {smallest.label}, {format_bytes(smallest.size)})",
        hint="free some memory, or name a quant explicitly: REPO:QUANT",
    )


def check_free_space(needed_bytes: int, free: int, where: Path) -> None:
    check_free_space_at(needed_bytes, free, where, "the download",
                        hint="free some space (`hearth du`, `hearth rm`), or point HF_HUB_CACHE at a bigger disk")


def available_ram_bytes() -> int:
    """RAM available now: the choice's fallback when the caller gives no budget (the library's
    `hearth.pull` passes the planner's, GPU memory included; the store never starts llama.cpp)."""
    import psutil

    return int(psutil.virtual_memory().available)



# -- environment (read at call time) -----------------------------------------------------------
def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_mode() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUTHY for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def download_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT") or 10)
    except ValueError:
        return 10.0


# -- results and progress ----------------------------------------------------------------------
class PullObserver(Protocol):
    def note(self, message: str) -> None: ...
    def file_started(self, name: str, total: int, done: int) -> None: ...
    def file_advanced(self, n_bytes: int) -> None: ...


class SilentObserver:
    def note(self, message: str) -> None:
        pass

    def file_started(self, name: str, total: int, done: int) -> None:
        pass

    def file_advanced(self, n_bytes: int) -> None:
        pass


@dataclass
class PulledFile:
    name: str
    path: Path
    size: int
    digest: str  # sha256 (LFS) or git blob sha1
    downloaded_bytes: int = 0
    resumed_from: int = 0


@dataclass
class PullResult:
    repo_id: str
    label: str
    quant: str | None
    commit: str
    files: list[PulledFile] = field(default_factory=list)
    reason: str | None = None  # why this quant, when none was named
    note: str | None = None  # e.g. the hub was unreachable and the cached copy is used

    @property
    def reference(self) -> str:
        return f"{self.repo_id}:{self.label}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def downloaded_bytes(self) -> int:
        return sum(f.downloaded_bytes for f in self.files)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1

    @property
    def etag(self) -> str:
        """The blob's name in the cache, as huggingface_hub names it."""
        return self.sha256 or self.blob_id or ""


# -- pull --------------------------------------------------------------------------------------
def pull_model(reference: str, revision: str | None = None, observer: PullObserver | None = None,
               memory_budget: Callable[[], int] | None = None) -> PullResult:
    """Download (or find) the model a `REPO[:QUANT]` reference names; see the module docstring."""
    observer = observer or SilentObserver()
    parsed = store.parse_reference(reference)
    if parsed is None:
        raise UsageError(f"{reference!r} is not a hub reference", hint="use REPO[:QUANT], e.g. org/Model-GGUF:Q4_K_M")
    repo_id, wanted = parsed
    listing, why = hub_listing(repo_id, revision)
    if listing is None:
        return _cached_result(reference, repo_id, why)
    commit, files = listing
    model, reason = _select(repo_id, files, wanted, memory_budget)
    if reason:
        observer.note(f"chose {reason}")
    by_name = {f.name: f for f in files}
    chosen = [by_name[name] for name in model.files]
    cache = store.hub_cache_dir()
    storage = cache / store.repo_folder(repo_id)
    check_free_space(bytes_to_fetch(storage, chosen), free_bytes(cache), cache)
    result = PullResult(repo_id, model.label, model.quant, commit, reason=reason)
    headers = auth_headers()
    for remote in chosen:
        result.files.append(fetch_file(cache, repo_id, commit, remote, headers, observer))
    write_ref(storage, revision or "main", commit)
    return result


class HubUnreachable(Exception):
    """The hub could not be reached (network down, 5xx): the cache may still answer."""


def hub_listing(repo_id: str, revision: str | None) -> tuple[tuple[str, list["RemoteFile"]] | None, str]:
    """((commit, files), "") from the hub, or (None, why) when the cache must answer instead."""
    if offline_mode():
        return None, "offline mode (HF_HUB_OFFLINE) is on"
    try:
        return list_repo(repo_id, revision), ""
    except HubUnreachable as exc:
        return None, str(exc)


def _cached_result(reference: str, repo_id: str, why: str) -> PullResult:
    found = store.pick_stored(reference, memory_budget=None)
    if found is None:
        raise HubError(f"{why}, and {reference} is not in the local cache",
                       hint="check the network (or HF_ENDPOINT); `hearth list` shows the models you have")
    files = [PulledFile(name, path, blob.stat().st_size, blob.name)
             for name, path, blob in zip(found.files, found.paths, found.blobs)]
    return PullResult(repo_id, found.label, found.quant, found.commit, files, note=f"{why}; using the cached copy")


def list_repo(repo_id: str, revision: str | None) -> tuple[str, list[RemoteFile]]:
    """(commit, files) of a repo at a revision, hub errors turned into one-line HearthErrors."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    endpoint = hub_endpoint()
    try:
        info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True,
                                                   timeout=download_timeout())
    except GatedRepoError:
        raise HubError(f"{repo_id} is gated: accept its terms on the hub first",
                       hint="then log in (`hf auth login`) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"repository {repo_id} not found on {endpoint} (or it is private and no valid token was sent)",
                       hint="check the name; for a private repo log in (`hf auth login`) or set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise HubError(f"revision {revision!r} not found in {repo_id}", hint="use a branch, tag or commit of the repo") from None
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
        raise HubUnreachable(f"cannot reach the hub at {endpoint} ({type(exc).__name__})") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status in (408, 429):
            raise HubUnreachable(f"the hub at {endpoint} answered HTTP {status}") from None
        if status in (401, 403):
            raise HubError(f"the hub refused access to {repo_id} (HTTP {status}): the token is invalid or lacks access",
                           hint="log in again (`hf auth login`) or set a valid HF_TOKEN") from None
        raise HubError(f"the hub answered HTTP {status} for {repo_id}") from None
    commit = info.sha or ""
    if not store.is_commit_id(commit):
        raise HubError(f"the hub sent an invalid commit id for {repo_id}")
    files = [RemoteFile(s.rfilename, (s.lfs.size if s.lfs else s.size) or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
             for s in info.siblings or []]
    return commit, files


def _select(repo_id: str, files: list[RemoteFile], wanted: str | None,
            memory_budget: Callable[[], int] | None) -> tuple[ModelFiles, str | None]:
    ggufs = [f for f in files if f.name.lower().endswith(".gguf")]
    unsafe = [f.name for f in ggufs if not store.is_safe_repo_path(f.name)]
    if unsafe:
        raise IntegrityError(f"the hub listed a file name that escapes the cache: {unsafe[0]!r}; refusing this repo")
    models = store.group_gguf_files({f.name: f.size for f in ggufs})
    if not models:
        has_weights = any(f.name.endswith((".safetensors", ".bin", ".pth")) for f in files)
        hint = f"`hearth convert {repo_id}` turns a Transformers checkpoint into a GGUF" if has_weights else \
            "look for a `-GGUF` version of this model on the hub"
        raise HubError(f"{repo_id} has no GGUF files", hint=hint)
    if wanted is not None:
        model = store.match_label(models, wanted)
        if model is None:
            labels = ", ".join(sorted({m.label for m in models}))
            raise HubError(f"no {wanted} in {repo_id}; it has: {labels}", hint=f"hearth pull {repo_id}:{models[0].label}")
        return model, None
    budget = memory_budget() if memory_budget is not None else available_ram_bytes()
    choice = choose_quant(models, budget)
    return choice.model, choice.reason


def bytes_to_fetch(storage: Path, files: list[RemoteFile]) -> int:
    needed = 0
    for remote in files:
        blob = storage / "blobs" / remote.etag
        partial = blob.with_name(blob.name + ".incomplete")
        if blob.exists():
            continue
        needed += remote.size - (partial.stat().st_size if partial.exists() else 0)
    return max(needed, 0)


def auth_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    # token=None: the token from HF_TOKEN or `hf auth login`, if any.
    return build_hf_headers(library_name="hearth")


def write_ref(storage: Path, revision: str, commit: str) -> None:
    if revision == commit or not store.is_safe_repo_path(revision):
        return
    from ..paths import atomic_write

    ref = storage / "refs" / revision
    if ref.is_file() and ref.read_text() == commit:
        return
    with atomic_write(ref) as handle:
        handle.write(commit)


# -- one file ----------------------------------------------------------------------------------
def fetch_file(cache: Path, repo_id: str, commit: str, remote: RemoteFile, headers: dict[str, str],
               observer: PullObserver) -> PulledFile:
    """Put one file into the cache (or find it there) under the blob's lock; link it into the snapshot."""
    with _full_disk_reported(cache / store.repo_folder(repo_id), remote):
        return _fetch_file(cache, repo_id, commit, remote, headers, observer)


@contextmanager
def _full_disk_reported(storage: Path, remote: RemoteFile) -> Iterator[None]:
    """A full disk (or quota) mid-pull -> one DiskSpaceError. The bytes received stay in
    `blobs/<etag>.incomplete`, which only a finished, verified download renames: the rerun resumes."""
    try:
        yield
    except OSError as exc:
        reason = no_room_reason(exc)
        if reason is None:
            raise
        partial = storage / "blobs" / f"{remote.etag}.incomplete"
        kept = partial.stat().st_size if partial.is_file() else 0
        received = f" ({kept:,} of {remote.size:,} bytes received, kept to resume)" if kept else ""
        raise DiskSpaceError(
            f"{reason}: could not write {remote.name} into {storage}{received}",
            hint="free some space (`hearth du`, `hearth rm`) or point HF_HUB_CACHE at a bigger disk, "
                 "then run the same command again: it resumes where it stopped") from None


def _fetch_file(cache: Path, repo_id: str, commit: str, remote: RemoteFile, headers: dict[str, str],
                observer: PullObserver) -> PulledFile:
    from filelock import FileLock, Timeout

    etag = remote.etag
    if not store.is_blob_name(etag) or not store.is_safe_repo_path(remote.name):
        raise IntegrityError(f"the hub sent an unusable name or hash for {remote.name!r}; refusing it")
    storage = cache / store.repo_folder(repo_id)
    blob = storage / "blobs" / etag
    pointer = storage / "snapshots" / commit / remote.name
    lock_path = cache / ".locks" / store.repo_folder(repo_id) / f"{etag}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), mode=0o664)
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        observer.note(f"waiting for another download of {remote.name} to finish")
        lock.acquire()
    try:
        pulled = PulledFile(remote.name, pointer, remote.size, etag)
        if not (blob.is_file() and blob.stat().st_size == remote.size):
            from huggingface_hub import hf_hub_url

            url = hf_hub_url(repo_id, remote.name, revision=commit, endpoint=hub_endpoint())
            pulled.resumed_from, pulled.downloaded_bytes = download_blob(url, blob, remote, headers, observer)
        _link(blob, pointer)
        return pulled
    finally:
        lock.release()


def _link(blob: Path, pointer: Path) -> None:
    """A relative symlink snapshot -> blob, made atomically (like huggingface_hub's)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(blob, pointer.parent)
    if pointer.is_symlink() and os.readlink(pointer) == target:
        return
    temp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    os.replace(temp, pointer)


def download_blob(url: str, blob: Path, remote: RemoteFile, headers: dict[str, str],
                  observer: PullObserver) -> tuple[int, int]:
    """Download into `<blob>.incomplete` (resuming it), verify, rename. Returns (resumed_from, bytes fetched)."""
    import httpx2

    partial = blob.with_name(blob.name + ".incomplete")
    sink = _HashingSink(partial, remote)
    resumed_from = sink.done
    observer.file_started(remote.name, remote.size, resumed_from)
    failures = 0
    try:
        while sink.done < remote.size:
            before = sink.done
            try:
                _stream_into(sink, url, headers, observer)
            except (httpx2.TransportError, _Transient) as exc:
                failures = 0 if sink.done > before else failures + 1
                if failures > RETRIES:
                    raise HubError(
                        f"download of {remote.name} stopped at {sink.done:,} of {remote.size:,} bytes "
                        f"({_describe(exc)})", hint="rerun the same `hearth pull` to resume where it stopped") from None
                time.sleep(RETRY_BASE_S * 2 ** failures)
        digest = sink.finish()
    except BaseException:
        sink.close()
        raise
    if digest != remote.etag:
        partial.unlink(missing_ok=True)
        raise IntegrityError(
            f"{remote.name} does not match the hub's {'sha256' if remote.sha256 else 'git hash'}: "
            f"expected {remote.etag}, got {digest}; the bad download was removed",
            hint="run the pull again; if it fails again, the hub or a proxy serves damaged bytes")
    os.replace(partial, blob)
    return resumed_from, sink.done - resumed_from


class _Transient(Exception):
    """An HTTP answer worth retrying (5xx, 408, 429) or a body that ended early."""


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _Transient) else type(exc).__name__


def _stream_into(sink: "_HashingSink", url: str, headers: dict[str, str], observer: PullObserver) -> None:
    import httpx2
    from huggingface_hub.utils import get_session

    request_headers = dict(headers)
    request_headers["Accept-Encoding"] = "identity"  # the hash is of the bytes as stored
    if sink.done:
        request_headers["Range"] = f"bytes={sink.done}-"
    timeout = httpx2.Timeout(download_timeout())
    with get_session().stream("GET", url, headers=request_headers, timeout=timeout) as response:
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Transient(f"HTTP {response.status_code}")
        if response.status_code == 416 or response.status_code >= 400:
            raise HubError(f"the hub answered HTTP {response.status_code} for {sink.remote.name}",
                           hint="the file may have been removed or made private; check the repo on the hub")
        if sink.done and response.status_code == 200:
            observer.note(f"the server ignored the resume request; restarting {sink.remote.name}")
            sink.restart()
            observer.file_started(sink.remote.name, sink.remote.size, 0)
        # Chunks as they come off the socket: a dropped connection loses nothing already received.
        for chunk in response.iter_raw():
            sink.write(chunk)
            observer.file_advanced(len(chunk))
    if sink.done < sink.remote.size:
        raise _Transient("the connection closed early")


class _HashingSink:
    """Appends to the partial file and hashes the same bytes on a second thread as they arrive.

    Resuming re-hashes only the bytes already on disk; the whole file is never read twice.
    hashlib releases the GIL on large buffers, so hashing overlaps the network and the writes.
    """

    def __init__(self, partial: Path, remote: RemoteFile):
        self.partial, self.remote = partial, remote
        self.algorithm = "sha256" if remote.sha256 else "git-sha1"
        if partial.exists() and partial.stat().st_size > remote.size:
            partial.unlink()
        self.handle = open(partial, "ab")
        self.done = self.handle.tell()
        self._start_hasher()
        if self.done:
            with open(partial, "rb") as existing:
                for block in iter(lambda: existing.read(CHUNK_BYTES), b""):
                    self._queue.put(block)

    def _start_hasher(self) -> None:
        self._hasher = store.new_hasher(self.algorithm, self.remote.size)
        # Bounded: if hashing ever falls behind, the download waits instead of filling memory.
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._hash_loop, args=(self._hasher, self._queue), daemon=True)
        self._thread.start()

    @staticmethod
    def _hash_loop(hasher, blocks: queue.Queue) -> None:
        for block in iter(blocks.get, None):
            hasher.update(block)

    def write(self, chunk: bytes) -> None:
        if self.done + len(chunk) > self.remote.size:
            raise HubError(f"the hub sent more bytes than {self.remote.name} has ({self.remote.size:,})")
        self.handle.write(chunk)
        self._queue.put(chunk)
        self.done += len(chunk)

    def restart(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.handle.seek(0)
        self.handle.truncate()
        self.done = 0
        self._start_hasher()

    def finish(self) -> str:
        self.close()
        return self._hasher.hexdigest()

    def close(self) -> None:
        try:
            if not self.handle.closed:
                self.handle.close()  # flushes: a full disk can fail here too
        finally:
            self._queue.put(None)
            self._thread.join()
