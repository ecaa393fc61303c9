"""Fetch a Transformers checkpoint (safetensors + config + tokenizer) for `hearth convert`.

The same transfer as `hearth pull` (resumable, sha256/git-hash verified, the shared HF cache and
its locks), but the files are chosen by name instead of by quant: weights in safetensors only
(pickle files can run code when loaded, so they are never fetched), plus the config and
tokenizer files a conversion reads. Offline, or when the hub cannot be reached, a snapshot
already in the cache is used.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from ..errors import HubError, IntegrityError
from . import store
from .pull import (PullObserver, SilentObserver, auth_headers, bytes_to_fetch, check_free_space, fetch_file,
                   free_bytes, hub_listing, write_ref)

CHECKPOINT_PATTERNS = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
                       "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                       "chat_template.jinja", "chat_template.json", "generation_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def checkpoint_files(names: list[str]) -> list[str]:
    """The repo files a conversion needs (top level only: shards in subfolders belong to other variants)."""
    return [n for n in names if "/" not in n and any(fnmatch.fnmatchcase(n, p) for p in CHECKPOINT_PATTERNS)]


def pull_checkpoint(repo_id: str, revision: str | None = None, observer: PullObserver | None = None) -> Path:
    """Download (or find in the cache) a checkpoint; returns its snapshot folder."""
    observer = observer or SilentObserver()
    listing, why = hub_listing(repo_id, revision)
    if listing is None:
        return cached_checkpoint(repo_id, revision, why)
    commit, files = listing
    wanted = set(checkpoint_files([f.name for f in files]))
    if not any(name.endswith(".safetensors") for name in wanted):
        pickles = [f.name for f in files if f.name.endswith(PICKLE_SUFFIXES)]
        only = f" (only pickle weights: {', '.join(pickles[:3])})" if pickles else ""
        raise HubError(f"{repo_id} has no safetensors weights{only}",
                       hint="pickle files can run code when loaded; hearth converts safetensors only")
    if "config.json" not in wanted:
        raise HubError(f"{repo_id} has no config.json: not a Transformers checkpoint")
    chosen = [f for f in files if f.name in wanted]
    unsafe = [f.name for f in chosen if not store.is_safe_repo_path(f.name)]
    if unsafe:
        raise IntegrityError(f"the hub listed a file name that escapes the cache: {unsafe[0]!r}; refusing this repo")
    cache = store.hub_cache_dir()
    storage = cache / store.repo_folder(repo_id)
    check_free_space(bytes_to_fetch(storage, chosen), free_bytes(cache), cache)
    headers = auth_headers()
    for remote in chosen:
        fetch_file(cache, repo_id, commit, remote, headers, observer)
    write_ref(storage, revision or "main", commit)
    return storage / "snapshots" / commit


def cached_checkpoint(repo_id: str, revision: str | None, why: str) -> Path:
    """The cached snapshot a revision (default main) points to, if it holds a checkpoint."""
    storage = store.hub_cache_dir() / store.repo_folder(repo_id)
    revision = revision or "main"
    commit = revision
    ref = storage / "refs" / revision
    if not store.is_commit_id(revision) and store.is_safe_repo_path(revision) and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit
    if store.is_commit_id(commit) and (snapshot / "config.json").is_file() and any(snapshot.glob("*.safetensors")):
        return snapshot
    raise HubError(f"{why}, and {repo_id} is not in the local cache",
                   hint="check the network (or HF_ENDPOINT), or convert a local folder")
