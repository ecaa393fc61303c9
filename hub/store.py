"""The model store: GGUF files in the standard Hugging Face cache, shared with other tools.

Layout (huggingface_hub's): `CACHE/models--org--name/blobs/<etag>` holds the bytes (the etag is
the sha256 for LFS files, the git blob sha1 otherwise), `snapshots/<commit>/<file>` links to
the blob, `refs/<branch>` names a commit. hearth reads this layout directly (no network, no
huggingface_hub import), so `REPO[:QUANT]` references resolve offline.

A *model* is one loadable GGUF in a repo: a single file, or every part of a split GGUF
(`name-00001-of-00003.gguf`). Its reference is `REPO:LABEL`, LABEL being the quant read from the
file name (`Q4_K_M`), or the file stem when the name has no quant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

from ..errors import DiskSpaceError, ModelNotFoundError, UsageError
from ..paths import atomic_write, data_dir

# A quant name between separators: Q4_K_M, q8_0, IQ4_XS, UD-Q4_K_XL, F16, BF16, TQ1_0, MXFP4...
_QUANT = re.compile(
    r"(?:^|(?<=[-._/]))((?:UD-)?(?:IQ\d_[A-Z]+|Q\d_K(?:_[A-Z]+)?|Q\d_\d(?:_\d_\d)?|TQ\d_\d|BF16|F16|F32|MXFP4))(?=$|[-._/])",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"^(?P<base>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "hf.co/", "hf://")


# -- names (pure) ------------------------------------------------------------------------------
def quant_of(filename: str) -> str | None:
    """The quant named in a GGUF file name, upper-cased (`q4_k_m` -> `Q4_K_M`), or None."""
    stem = _SPLIT.sub(r"\g<base>", PurePosixPath(filename).name)
    stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = _QUANT.findall(stem)
    return found[-1].upper() if found else None


def is_safe_repo_path(name: str) -> bool:
    """True when a repo file name stays inside its folder (no `..`, no absolute path, no `\\`)."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def parse_reference(reference: str) -> tuple[str, str | None] | None:
    """`org/name[:QUANT]` -> (repo_id, label or None); None when it is not a repo reference."""
    ref = reference.strip()
    for prefix in _HUB_PREFIXES:
        if ref.lower().startswith(prefix):
            ref = ref[len(prefix):]
            break
    repo_id, _, label = ref.partition(":")
    repo_id = repo_id.rstrip("/")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        return None
    return repo_id, (label.strip() or None)


def is_commit_id(text: str) -> bool:
    return bool(_HEX40.match(text))


def is_blob_name(text: str) -> bool:
    """A sha256 (LFS) or git sha1: the only names hearth writes under blobs/."""
    return bool(_HEX64.match(text) or _HEX40.match(text))


def repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


@dataclass(frozen=True)
class ModelFiles:
    """One loadable model in a repo: a GGUF file or all parts of a split GGUF."""

    label: str  # what follows `REPO:` in a reference
    quant: str | None
    files: tuple[str, ...]  # repo-relative names, split parts in order
    size: int = 0  # total bytes (0 when unknown)


def group_gguf_files(sizes: dict[str, int] | Iterable[str]) -> list[ModelFiles]:
    """Group GGUF file names into models: split parts together, projectors (mmproj) left out.

    A split set with a part missing is left out: it cannot be loaded.
    """
    sizes = sizes if isinstance(sizes, dict) else {name: 0 for name in sizes}
    singles: list[str] = []
    splits: dict[tuple[str, int], dict[int, str]] = {}
    for name in sizes:
        base = PurePosixPath(name).name
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower():
            continue
        match = _SPLIT.match(name)
        if match:
            key = (match["base"], int(match["count"]))
            splits.setdefault(key, {})[int(match["index"])] = name
        else:
            singles.append(name)
    groups = [(name, (name,)) for name in singles]
    for (base, count), parts in splits.items():
        if sorted(parts) == list(range(1, count + 1)):
            groups.append((base + ".gguf", tuple(parts[i] for i in range(1, count + 1))))
    models = []
    for first, files in sorted(groups):
        quant = quant_of(first)
        label = quant or re.sub(r"\.gguf$", "", PurePosixPath(first).name, flags=re.IGNORECASE)
        models.append(ModelFiles(label, quant, files, sum(sizes[f] for f in files)))
    return models


def match_label(models: Sequence[ModelFiles], wanted: str) -> ModelFiles | None:
    """The model whose quant or label is `wanted` (case-insensitive); the smallest if several."""
    key = wanted.strip().upper()
    hits = [m for m in models if m.label.upper() == key or (m.quant or "").upper() == key]
    if not hits:
        hits = [m for m in models if (m.quant or "").upper().removeprefix("UD-") == key]
    return min(hits, key=lambda m: (m.size, m.files)) if hits else None


# -- the cache on disk -------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (as huggingface_hub reads it)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(os.path.expandvars(env[key])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


@dataclass(frozen=True)
class StoredModel:
    repo_id: str
    label: str
    quant: str | None
    commit: str
    files: tuple[str, ...]  # repo-relative names
    paths: tuple[Path, ...]  # snapshot paths (links into blobs/)
    blobs: tuple[Path, ...]  # the files that hold the bytes
    size: int
    pulled_at: float

    @property
    def reference(self) -> str:
        return f"{self.repo_id}:{self.label}"

    @property
    def path(self) -> Path:
        return self.paths[0]


def _snapshot_models(repo_id: str, snapshot: Path) -> list[StoredModel]:
    present: dict[str, int] = {}
    for path in snapshot.rglob("*"):
        if path.suffix.lower() == ".gguf" and path.is_file():  # is_file() follows the link
            present[path.relative_to(snapshot).as_posix()] = path.stat().st_size
    models = []
    for model in group_gguf_files(present):
        paths = tuple(snapshot / name for name in model.files)
        blobs = tuple(p.resolve() for p in paths)
        pulled = max(p.lstat().st_mtime for p in paths)
        models.append(StoredModel(repo_id, model.label, model.quant, snapshot.name, model.files,
                                  paths, blobs, sum(b.stat().st_size for b in set(blobs)), pulled))
    return models


def _ref_commits(repo_dir: Path) -> set[str]:
    refs = repo_dir / "refs"
    if not refs.is_dir():
        return set()
    return {p.read_text().strip() for p in refs.rglob("*") if p.is_file()}


def _repo_dirs(cache: Path) -> list[tuple[str, Path]]:
    if not cache.is_dir():
        return []
    found = []
    for repo_dir in sorted(cache.glob("models--*")):
        repo_id = repo_dir.name[len("models--"):].replace("--", "/", 1)
        if repo_dir.is_dir() and parse_reference(repo_id):
            found.append((repo_id, repo_dir))
    return found


def repo_models(repo_id: str, repo_dir: Path, all_revisions: bool = False) -> list[StoredModel]:
    """Models of one cached repo; per label the copy a ref points to, else the newest."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    found = [m for snap in sorted(snapshots.iterdir()) if snap.is_dir() for m in _snapshot_models(repo_id, snap)]
    if all_revisions:
        return found
    current = _ref_commits(repo_dir)
    best: dict[str, StoredModel] = {}
    for model in found:
        rank = (model.commit in current, model.pulled_at)
        held = best.get(model.label)
        if held is None or rank > (held.commit in current, held.pulled_at):
            best[model.label] = model
    return sorted(best.values(), key=lambda m: m.label)


def scan_store(cache: Path | None = None) -> list[StoredModel]:
    """Every GGUF model in the cache, sorted by reference."""
    cache = cache or hub_cache_dir()
    return [m for repo_id, repo_dir in _repo_dirs(cache) for m in repo_models(repo_id, repo_dir)]


def find_models(reference: str, cache: Path | None = None) -> list[StoredModel]:
    """The cached models a reference names: one for `REPO:LABEL`, all of the repo for `REPO`."""
    parsed = parse_reference(reference)
    if parsed is None:
        return []
    repo_id, label = parsed
    cache = cache or hub_cache_dir()
    repo_dir = cache / repo_folder(repo_id)
    if not repo_dir.is_dir():
        return []
    models = repo_models(repo_id, repo_dir)
    if label is None:
        return models
    hit = match_label([ModelFiles(m.label, m.quant, m.files, m.size) for m in models], label)
    return [m for m in models if hit is not None and m.files == hit.files]


def pick_stored(reference: str, memory_budget: Callable[[], int] | None = None,
                cache: Path | None = None) -> StoredModel | None:
    """The one cached model a reference means; without a quant, the one `pull` would choose for
    `memory_budget()` bytes of memory (asked only when there is a choice; None: the largest)."""
    models = find_models(reference, cache)
    if len(models) <= 1:
        return models[0] if models else None
    from .pull import choose_quant  # pull imports this module

    budget = memory_budget() if memory_budget is not None else max(m.size for m in models) * 2
    choice = choose_quant([ModelFiles(m.label, m.quant, m.files, m.size) for m in models], budget, must_fit=False)
    return next(m for m in models if m.files == choice.model.files)


def split_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF given any part (or just [path])."""
    match = _SPLIT.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [path.with_name(f"{match['base']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


# -- last used ---------------------------------------------------------------------------------
def _usage_file() -> Path:
    return data_dir() / "store-usage.json"


def last_used() -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(_usage_file().read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def record_use(reference: str, when: float | None = None) -> None:
    usage = last_used()
    usage[reference] = time.time() if when is None else when
    try:
        with atomic_write(_usage_file()) as handle:
            json.dump(usage, handle, indent=1, sort_keys=True)
    except DiskSpaceError:
        pass  # `hearth list` shows when a model was last used: a full disk must not stop it from running


# -- rm ----------------------------------------------------------------------------------------
@dataclass
class RemovalPlan:
    references: list[str]
    links: list[Path]  # snapshot entries to delete
    blobs: list[Path]  # blobs no other snapshot entry uses
    repo_dir: Path | None = None  # set when the whole repo goes
    bytes_freed: int = 0


def plan_removal(reference: str, cache: Path | None = None) -> RemovalPlan:
    """What `rm` deletes: the model's snapshot entries (every revision) and blobs nothing else uses."""
    parsed = parse_reference(reference)
    if parsed is None:
        raise UsageError(f"{reference!r} is not a store reference", hint="use REPO[:QUANT] as `hearth list` shows it")
    repo_id, label = parsed
    cache = cache or hub_cache_dir()
    repo_dir = cache / repo_folder(repo_id)
    models = repo_models(repo_id, repo_dir, all_revisions=True) if repo_dir.is_dir() else []
    if label is not None:
        target = match_label([ModelFiles(m.label, m.quant, m.files, m.size) for m in models], label)
        models = [m for m in models if target is not None and m.label == target.label]
    if not models:
        raise ModelNotFoundError(f"{reference} is not in the store ({cache})", hint="`hearth list` shows what is here")
    if label is None:  # the whole repo, README and partial downloads included
        blobs = [p for p in (repo_dir / "blobs").glob("*") if p.is_file()] if (repo_dir / "blobs").is_dir() else []
        return RemovalPlan(sorted({m.reference for m in models}), [], blobs, repo_dir, _total_size(blobs))
    links = [p for m in models for p in m.paths]
    doomed = {p.resolve() for p in links}
    kept = {p.resolve() for p in (repo_dir / "snapshots").rglob("*") if p.is_symlink() and p not in links}
    blobs = sorted(b for b in doomed - kept if b.exists() and repo_dir in b.parents)
    return RemovalPlan(sorted({m.reference for m in models}), links, blobs, None, _total_size(blobs))


def apply_removal(plan: RemovalPlan) -> None:
    if plan.repo_dir is not None:
        shutil.rmtree(plan.repo_dir)
        return
    for link in plan.links:
        link.unlink(missing_ok=True)
    for blob in plan.blobs:
        blob.unlink(missing_ok=True)
        blob.with_name(blob.name + ".incomplete").unlink(missing_ok=True)
    for link in plan.links:  # drop folders the removal emptied, up to snapshots/
        folder = link.parent
        while folder.name != "snapshots" and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


def _total_size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in set(paths) if p.exists())


# -- du ----------------------------------------------------------------------------------------
@dataclass
class DiskUsage:
    cache_dir: Path
    models: list[tuple[str, int, int]] = field(default_factory=list)  # (reference, bytes, files)
    partial_bytes: int = 0  # unfinished downloads (resumable)
    other_bytes: int = 0  # non-GGUF files (README, configs) and blobs no model uses
    total_bytes: int = 0  # every blob once


def disk_usage(cache: Path | None = None) -> DiskUsage:
    cache = cache or hub_cache_dir()
    usage = DiskUsage(cache)
    for repo_id, repo_dir in _repo_dirs(cache):
        model_blobs: set[Path] = set()
        for model in repo_models(repo_id, repo_dir, all_revisions=True):
            model_blobs.update(model.blobs)
        for model in repo_models(repo_id, repo_dir):
            usage.models.append((model.reference, model.size, len(model.files)))
        blob_dir = repo_dir / "blobs"
        for blob in blob_dir.iterdir() if blob_dir.is_dir() else []:
            size = blob.stat().st_size
            usage.total_bytes += size
            if blob.name.endswith(".incomplete"):
                usage.partial_bytes += size
            elif blob.resolve() not in model_blobs:
                usage.other_bytes += size
    return usage


# -- verify ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlobCheck:
    reference: str
    file: str  # repo-relative name
    blob: Path
    status: str  # "ok" | "damaged" | "missing" | "unchecked"
    expected: str | None = None
    actual: str | None = None


def expected_digest(blob_name: str) -> tuple[str, str] | None:
    """How a blob's name states its content: ("sha256", hex) for LFS, ("git-sha1", hex) otherwise."""
    if _HEX64.match(blob_name):
        return "sha256", blob_name
    if _HEX40.match(blob_name):
        return "git-sha1", blob_name
    return None


def new_hasher(algorithm: str, size: int):
    """A hashlib object; git's blob id hashes a `blob <size>\\0` header before the bytes."""
    if algorithm == "sha256":
        return hashlib.sha256()
    hasher = hashlib.sha1()
    hasher.update(f"blob {size}\0".encode())
    return hasher


def hash_file(path: Path, algorithm: str, on_bytes: Callable[[int], None] | None = None) -> str:
    size = path.stat().st_size
    hasher = new_hasher(algorithm, size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            hasher.update(block)
            if on_bytes:
                on_bytes(len(block))
    return hasher.hexdigest()


def verify_models(models: Sequence[StoredModel], on_bytes: Callable[[int], None] | None = None) -> list[BlobCheck]:
    """Re-hash every blob of these models against the hash its name states."""
    checks = []
    for model in models:
        for name, link in zip(model.files, model.paths):
            blob = link.resolve()
            if not blob.is_file():
                checks.append(BlobCheck(model.reference, name, blob, "missing"))
                continue
            expected = expected_digest(blob.name)
            if expected is None:
                checks.append(BlobCheck(model.reference, name, blob, "unchecked"))
                continue
            actual = hash_file(blob, expected[0], on_bytes)
            status = "ok" if actual == expected[1] else "damaged"
            checks.append(BlobCheck(model.reference, name, blob, status, expected[1], actual))
    return checks


def remove_damaged(checks: Sequence[BlobCheck], models: Sequence[StoredModel]) -> list[Path]:
    """Delete damaged blobs and the snapshot entries that point at them, so `pull` fetches them again."""
    bad = {c.blob for c in checks if c.status == "damaged"}
    removed = []
    for model in models:
        for link in model.paths:
            if link.resolve() in bad:
                link.unlink(missing_ok=True)
                removed.append(link)
    for blob in bad:
        blob.unlink(missing_ok=True)
        removed.append(blob)
    return removed
