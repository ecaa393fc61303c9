"""The model store commands: `pull`, `list`, `show`, `rm`, `du`, `verify`.

Models live in the standard Hugging Face cache (HF_HUB_CACHE / HF_HOME), shared with
huggingface_hub, llama.cpp and other tools. huggingface_hub is imported only by `pull`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer

from ..errors import HearthError, IntegrityError, ModelNotFoundError
from . import _options as opt
from . import _output as out
from .app import command

ModelArg = Annotated[str, typer.Argument(help="REPO:QUANT as `hearth list` shows it (REPO alone: all its quants).", show_default=False)]


class PullProgress:
    """Shows `pull` progress: notes on stderr, one bytes/speed/ETA bar per file."""

    def __init__(self, bar):
        self.bar = bar
        self.tasks: dict[str, int] = {}
        self.current: int | None = None

    def note(self, message: str) -> None:
        out.info(message)

    def file_started(self, name: str, total: int, done: int) -> None:
        if name in self.tasks:
            self.bar.update(self.tasks[name], total=total, completed=done)
        else:
            self.tasks[name] = self.bar.add_task(name.rsplit("/", 1)[-1], total=total, completed=done)
        self.current = self.tasks[name]

    def file_advanced(self, n_bytes: int) -> None:
        self.bar.advance(self.current, n_bytes)


@command("pull")
def pull(
    reference: Annotated[str, typer.Argument(help="REPO[:QUANT], e.g. bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M.", show_default=False)],
    revision: Annotated[Optional[str], typer.Option("--revision", "-r", help="Branch, tag or commit (default: main).")] = None,
    json_out: opt.Json = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Download a GGUF model from the Hugging Face hub (resumable, sha256-verified).

    Without QUANT, picks the best quant that fits this machine (Q4_K_M, then Q8_0) and says
    why. Split GGUFs are fetched whole. Files go to the shared Hugging Face cache; an
    interrupted pull resumes where it stopped. Private repos use HF_TOKEN or `hf auth login`.

    Examples:

      hearth pull bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M

      hearth pull unsloth/gemma-3-270m-it-GGUF              # best quant that fits

      hearth pull org/Model-GGUF:q8_0 --revision v1.1 --json
    """
    from ..model_files import fit_summary, pull as pull_model

    out.set_verbosity(verbose)
    with out.progress("bytes", enabled=not json_out) as bar:
        result = pull_model(reference, revision=revision, observer=PullProgress(bar))
    if result.note:
        out.warn(result.note)
    elif not result.downloaded_bytes:
        out.info(f"{result.reference} is already here")
    plan_line = fit_summary(result.files[0].path)
    if json_out:
        out.emit_json({**pull_record(result), "plan": plan_line})
        return
    out.info(f"plan: {plan_line}")
    pairs = [("model", result.reference), ("quant", result.quant or "-"), ("commit", result.commit),
             ("size", out.human_bytes(result.size)), ("downloaded", out.human_bytes(result.downloaded_bytes))]
    pairs += [("file", f.path) for f in result.files]
    out.key_values(pairs)


def pull_record(result) -> dict:
    return {
        "model": result.reference, "repo": result.repo_id, "quant": result.quant, "label": result.label,
        "commit": result.commit, "size_bytes": result.size, "downloaded_bytes": result.downloaded_bytes,
        "reason": result.reason, "note": result.note,
        "files": [{"name": f.name, "path": str(f.path), "size_bytes": f.size, "digest": f.digest,
                   "downloaded_bytes": f.downloaded_bytes, "resumed_from": f.resumed_from} for f in result.files],
    }


def _gguf_summary(model) -> dict:
    """Architecture, parameters and context length from the GGUF header(s); empty if unreadable."""
    from ..runtime.gguf_file import read_gguf

    try:
        infos = [read_gguf(path) for path in model.paths]
    except HearthError as exc:
        return {"error": exc.message}
    return {"architecture": infos[0].architecture, "parameters": sum(i.n_params for i in infos),
            "context_length": infos[0].arch_value("context_length")}


def _when(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds") if timestamp else None


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    seconds = max(time.time() - timestamp, 0)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _params(n: int | None) -> str:
    if not n:
        return "?"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}" if scale == 1e9 else f"{n / scale:.0f}{suffix}"
    return str(n)


@command("list")
def list_models(json_out: opt.Json = False) -> None:
    """List the GGUF models in the local store (the Hugging Face cache).

    Examples:

      hearth list

      hearth list --json | jq -r '.[].model'
    """
    from ..hub import store

    used = store.last_used()
    rows = []
    for model in store.scan_store():
        rows.append({"model": model.reference, "repo": model.repo_id, "quant": model.quant, "size_bytes": model.size,
                     **_gguf_summary(model), "files": [str(p) for p in model.paths],
                     "pulled_at": _when(model.pulled_at), "last_used": _when(used.get(model.reference))})
    if json_out:
        out.emit_json(rows)
        return
    if not rows:
        out.info(f"no models in {store.hub_cache_dir()} yet; `hearth pull REPO[:QUANT]` downloads one")
        return
    out.table(["NAME", "QUANT", "SIZE", "ARCH", "PARAMS", "CTX", "LAST USED"], [
        (r["model"], r["quant"] or "-", out.human_bytes(r["size_bytes"]), r.get("architecture", "damaged?"),
         _params(r.get("parameters")), r.get("context_length") or "?", _ago(used.get(r["model"])))
        for r in rows])


@command("show")
def show(model: Annotated[str, typer.Argument(help="REPO[:QUANT], a .gguf path, or `default`.", show_default=False)],
         json_out: opt.Json = False) -> None:
    """Show a model's GGUF metadata: architecture, layers, heads, vocab, template, quant types.

    Examples:

      hearth show bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M

      hearth show ./model.gguf --json | jq .tensor_types

      hearth show default
    """
    from ..model_files import model_details

    details = model_details(model)
    if json_out:
        out.emit_json(details)
        return
    template = details["chat_template"]
    template_line = f"{len(template)} chars: {template.strip().splitlines()[0][:60]}" if template else "none"
    types = ", ".join(f"{k} x{v}" for k, v in details["tensor_types"].items())
    out.key_values([
        ("model", details["model"]), *[("file", f) for f in details["files"]],
        ("size", out.human_bytes(details["size_bytes"])), ("architecture", details["architecture"]),
        ("parameters", f"{details['parameters']:,}"), ("layers", details["layers"]), ("heads", details["heads"]),
        ("kv heads", details["kv_heads"]), ("embedding", details["embedding_length"]),
        ("context length", details["context_length"]), ("vocab size", details["vocab_size"]),
        ("tensor types", types), ("chat template", template_line), ("license", details["license"] or "not stated"),
    ])


@command("rm")
def rm(model: ModelArg,
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
       json_out: opt.Json = False) -> None:
    """Remove a model's files from the store (blobs other models share stay).

    Examples:

      hearth rm bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q8_0

      hearth rm org/Model-GGUF -y          # every quant of the repo
    """
    from ..hub import store

    plan = store.plan_removal(model)
    what = ", ".join(plan.references)
    if not yes:
        try:
            confirmed = typer.confirm(f"remove {what} ({out.human_bytes(plan.bytes_freed)})?", default=False, err=True)
        except typer.Abort:
            confirmed = False
        if not confirmed:
            raise HearthError("nothing removed", hint="pass -y to remove without asking")
    store.apply_removal(plan)
    if json_out:
        out.emit_json({"removed": plan.references, "bytes_freed": plan.bytes_freed})
    else:
        out.key_values([("removed", what), ("freed", out.human_bytes(plan.bytes_freed))])


@command("du")
def du(json_out: opt.Json = False) -> None:
    """Disk used by each model in the store, and in total.

    Examples:

      hearth du

      hearth du --json | jq .total_bytes
    """
    from ..hub import store

    usage = store.disk_usage()
    if json_out:
        out.emit_json({"cache_dir": str(usage.cache_dir), "total_bytes": usage.total_bytes,
                       "partial_bytes": usage.partial_bytes, "other_bytes": usage.other_bytes,
                       "models": [{"model": m, "bytes": b, "files": n} for m, b, n in usage.models]})
        return
    rows = [(m, out.human_bytes(b), n) for m, b, n in usage.models]
    if usage.partial_bytes:
        rows.append(("(unfinished downloads)", out.human_bytes(usage.partial_bytes), ""))
    if usage.other_bytes:
        rows.append(("(other files)", out.human_bytes(usage.other_bytes), ""))
    rows.append(("TOTAL", out.human_bytes(usage.total_bytes), ""))
    out.table(["MODEL", "SIZE", "FILES"], rows, title=str(usage.cache_dir))


@command("verify")
def verify(model: Annotated[Optional[str], typer.Argument(help="REPO[:QUANT]; default: every model.", show_default=False)] = None,
           remove: Annotated[bool, typer.Option("--remove", help="Delete damaged files so `hearth pull` fetches them again.")] = False,
           json_out: opt.Json = False) -> None:
    """Re-hash the store's files against their sha256 and report damaged ones (exit 1).

    Examples:

      hearth verify

      hearth verify bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M --json

      hearth verify --remove && hearth pull REPO:QUANT
    """
    from ..hub import store

    models = store.find_models(model) if model else store.scan_store()
    if model and not models:
        raise ModelNotFoundError(f"{model} is not in the store", hint="`hearth list` shows what is here")
    total = sum(b.stat().st_size for m in models for b in set(m.blobs) if b.exists())
    with out.progress("bytes", enabled=not json_out) as bar:
        task = bar.add_task("verifying", total=total)
        checks = store.verify_models(models, on_bytes=lambda n: bar.advance(task, n))
    bad = [c for c in checks if c.status in ("damaged", "missing")]
    removed = store.remove_damaged(checks, models) if remove and bad else []
    if json_out:
        out.emit_json({"checked": len(checks), "damaged": len(bad), "removed": [str(p) for p in removed],
                       "files": [{"model": c.reference, "file": c.file, "blob": str(c.blob), "status": c.status,
                                  "expected": c.expected, "actual": c.actual} for c in checks]})
    elif checks:
        out.table(["MODEL", "FILE", "STATUS"], [(c.reference, c.file, c.status) for c in checks])
    else:
        out.info("no models to verify")
    if bad:
        refs = sorted({c.reference for c in bad})
        hint = f"`hearth pull {refs[0]}` downloads it again" if remove else \
            "`hearth verify --remove` deletes the damaged files; then `hearth pull` downloads them again"
        raise IntegrityError(f"{len(bad)} damaged or missing file(s) in {', '.join(refs)}", hint=hint)
