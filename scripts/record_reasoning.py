#!/usr/bin/env python3
"""Record reasoning samples on GSM8K once, resumably, for offline study (scripts/study_stopping.py).

For each problem of the range: K samples at the given sampling settings and one greedy answer,
decoded together (one request of K samples sharing the prompt, one greedy request beside it),
each sample stopped where its answer line is complete (as hearth's reasoning mode stops it). Per
sample the record keeps its extracted answer, token count, finish reason and per-token DeepConf
confidences — no text at all (a sample's reasoning restates its question): the questions and gold
answers stay in ../shared/data/gsm8k/train.jsonl and are read from there by index.

The output is JSONL: a header line with the settings, then one line per problem, appended and
flushed as each problem ends. Run it again with the same OUT to resume: problems already there are
skipped (a torn last line is dropped); other settings than the header's are refused. The
recordings behind the README's reasoning figures are kept in scripts/recordings/ (the commands
that made them are in its README), so a later session resumes them where the last one stopped.

usage: python scripts/record_reasoning.py OUT.jsonl --problems 0:100 [--model qwen] [--prompt auto|boxed-system|boxed-user|hearth]
       [-k 16 (0: greedy only)] [--temperature 0.7] [--top-k 40] [--top-p 0.95] [--min-p 0.05] [--max-tokens 512] [--no-greedy]
Run it alone: another llama.cpp process on the same 2 cores ruins both. Ctrl-C stops after
keeping every finished problem.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reasoning import GSM8K, model_path  # noqa: E402

FORMAT = 1


def gsm8k_rows(indices: list[int]) -> dict[int, tuple[str, str]]:
    """index -> (question, gold answer) for the given train indices."""
    wanted, rows = set(indices), {}
    with open(GSM8K, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index in wanted:
                row = json.loads(line)
                rows[index] = (row["question"], row["answer"].split("####")[-1].strip().replace(",", ""))
    return rows


def parse_range(text: str) -> list[int]:
    """'0:100' -> 0..99; '0:50,7000:7050' -> both."""
    out = []
    for part in text.split(","):
        start, _, end = part.partition(":")
        out.extend(range(int(start), int(end)) if end else [int(start)])
    return out


def read_existing(path: Path, header: dict) -> set[int]:
    """Problems already recorded in `path` under the same settings (a torn last line is cut off)."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    lines = data.decode("utf-8").splitlines()
    if not lines:
        return set()
    theirs = json.loads(lines[0])
    if theirs.get("settings") != header["settings"]:
        sys.exit(f"error: {path} was recorded with other settings: {theirs.get('settings')}")
    return {json.loads(line)["problem"] for line in lines[1:]}


def sample_row(sample, mode: str, fork: tuple[int, int, str] | None = None) -> dict:
    """A sample's record; `fork` = (source sample, prefix tokens, prefix text) for a sample that
    continued another one (its answer is read from the prefix and its own text together)."""
    from hearth.runtime.answers import final_answer

    row = {"answer": final_answer((fork[2] if fork else "") + sample.text, mode), "tokens": len(sample.tokens),
           "finish": sample.finish_reason, "confidences": [round(c, 3) for c in sample.token_confidences]}
    if fork:
        row["source"], row["prefix"] = fork[0], fork[1]
    return row


def fork_point(engine, tokens: list[int]) -> int:
    """Tokens of `tokens` up to its last line break at or before half of them (0: none)."""
    best = 0
    for i, token in enumerate(tokens[: len(tokens) // 2]):
        if b"\n" in engine.model.piece(token):
            best = i + 1
    return best


def fork_rows(engine, requests, results, args, sampled, group, hooks) -> list[list[dict]]:
    """The prefix-sharing arm's later samples, as records: per problem K - N samples continuing
    the most confident of its N independent samples from its fork point (prompt + prefix)."""
    from hearth.runtime.requests import GenRequest
    from hearth.runtime.scheduler import Scheduler
    from hearth.runtime.stopping import lowest_group_confidence

    later, prefixes = [], []
    for index, request, firsts in zip(group, requests, results):
        source = max(firsts, key=lambda s: lowest_group_confidence(s.token_confidences))
        cut = fork_point(engine, source.tokens)
        prefixes.append((source.index, cut, engine.model.detokenize(source.tokens[:cut])))
        seeds = [100_000 * index + i for i in range(args.fork, args.k)]
        later.append(GenRequest(request.prompt + source.tokens[:cut], sampled, args.max_tokens - cut,
                                n=args.k - args.fork, seeds=seeds, confidence_top_k=request.confidence_top_k))
    out = Scheduler(engine).run(later, hooks)
    return [[sample_row(s, args.answer, fork) for s in samples] for samples, fork in zip(out, prefixes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--problems", required=True, help="train indices, e.g. 0:100 or 0:50,7000:7050")
    ap.add_argument("--model", default="qwen")
    ap.add_argument("--prompt", default="auto", help="reasoning style: auto (the model's, as hearth chooses) or a style name")
    ap.add_argument("--answer", default="number")
    ap.add_argument("-k", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--min-p", type=float, default=0.05)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--no-greedy", action="store_true", help="skip the greedy answer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--together", type=int, default=1, help="problems decoded together (wider calls: faster where the cost curve rises)")
    ap.add_argument("--streams", action="store_true", help="one KV stream per sequence (attention spans its own tokens only)")
    ap.add_argument("--fork", type=int, default=0, metavar="N",
                    help="the prefix-sharing arm: N independent samples, then the other K - N continue the most"
                         " confident of them (lowest-window weight) from its last line break at or before half its"
                         " tokens; their rows count only the tokens they generate (`prefix`: the tokens shared)")
    args = ap.parse_args()
    if args.k == 0 and args.no_greedy:
        sys.exit("error: -k 0 records the greedy answer only; --no-greedy leaves nothing to record")
    if args.fork and not (0 < args.fork < args.k and args.no_greedy):
        sys.exit("error: --fork N needs 0 < N < K and --no-greedy")

    from hearth.runtime.answers import answer_line_complete
    from hearth.runtime.engine import ContextConfig, Engine, set_llama_logging
    from hearth.runtime.gguf_file import read_gguf
    from hearth.runtime.prompts import STYLES, style_for_gguf
    from hearth.runtime.reasoning import CONFIDENCE_TOP_K
    from hearth.runtime.requests import GenRequest, Hooks
    from hearth.runtime.sampling import SamplingParams
    from hearth.runtime.scheduler import Scheduler
    from hearth.runtime.templates import build_prompt

    set_llama_logging(False)
    path = model_path(args.model)
    info = read_gguf(path)
    style = style_for_gguf(info.metadata) if args.prompt == "auto" else STYLES[args.prompt]
    settings = {"format": FORMAT, "model": Path(path).name, "style": style.name, "answer": args.answer, "k": args.k,
                "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
                "max_tokens": args.max_tokens, "greedy": not args.no_greedy}
    if args.fork:
        settings["fork"] = {"independent": args.fork, "source": "most confident", "at": "last line break <= half"}
    header = {"settings": settings}
    done = read_existing(args.out, header)
    todo = [i for i in parse_range(args.problems) if i not in done]
    print(f"{args.out}: {len(done)} problems recorded, {len(todo)} to go; style {style.name}", file=sys.stderr)
    if not todo:
        return
    rows = gsm8k_rows(todo)
    if not args.out.exists() or args.out.stat().st_size == 0:
        args.out.write_text(json.dumps(header) + "\n")

    class StopAtAnswer(Hooks):  # reasoning mode's per-sample stop
        def on_text(self, sample, delta):
            if answer_line_complete(sample.text, args.answer):
                sample.stop("answer")

    sampled = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p)
    greedy = SamplingParams(temperature=0.0)
    n_seq = (args.k + (0 if args.no_greedy else 1)) * args.together
    if args.streams:
        config = ContextConfig(n_ctx=n_seq * (512 + args.max_tokens), n_seq_max=n_seq, n_threads=args.threads,
                               n_threads_batch=args.threads, flash_attn=False, kv_unified=False)
    else:
        config = ContextConfig(n_ctx=1024 * args.together + n_seq * (args.max_tokens + 1), n_seq_max=n_seq,
                               n_threads=args.threads, n_threads_batch=args.threads, flash_attn=False)
    started = time.perf_counter()
    tokens_total = count = 0
    with Engine(path, config) as engine, open(args.out, "a", encoding="utf-8") as out:
        model = engine.model
        # Problems go in groups of --together, each group one scheduler run, written when done
        # (the unit of resuming). Feeding them into one run as sequences free up decodes as fast:
        # Qwen 1.5B, K=16 + greedy, 3 problems in flight on KV streams, 6 problems: 62.2 tok/s
        # against 62.3 for groups (2026-12-05; an earlier 16 tok/s was measured beside other work).
        for first in range(0, len(todo), args.together):
            group = todo[first:first + args.together]
            requests, parts = [], []
            for index in group:
                question, _gold = rows[index]
                messages = style.messages([{"role": "user", "content": question}], args.answer)
                text = build_prompt(info.chat_template, messages, model.bos_text, model.eos_text, model.add_bos).text
                prompt = engine.tokenize(text, add_special=True)
                if args.k:
                    n = args.fork or args.k
                    seeds = [100_000 * index + i for i in range(n)]
                    requests.append(GenRequest(prompt, sampled, args.max_tokens, n=n, seeds=seeds,
                                               confidence_top_k=CONFIDENCE_TOP_K))
                    parts.append((index, "samples"))
                if not args.no_greedy:
                    requests.append(GenRequest(prompt, greedy, args.max_tokens, confidence_top_k=CONFIDENCE_TOP_K))
                    parts.append((index, "greedy"))
            try:
                results = Scheduler(engine).run(requests, StopAtAnswer())
                forked = (fork_rows(engine, requests, results, args, sampled, group, StopAtAnswer()) if args.fork
                          else [[] for _ in requests])
            except KeyboardInterrupt:
                print("\ninterrupted: every finished problem is kept; run again to resume", file=sys.stderr)
                sys.exit(130)
            records = {index: {"problem": index, "prompt_tokens": len(requests[0].prompt)} for index in group}
            for (index, part), request, samples, later in zip(parts, requests, results, forked):
                records[index]["prompt_tokens"] = len(request.prompt)
                records[index][part] = ([sample_row(s, args.answer) for s in samples] + later if part == "samples"
                                        else sample_row(samples[0], args.answer))
            for record in records.values():
                out.write(json.dumps(record) + "\n")
                tokens_total += sum(r["tokens"] for r in record.get("samples", [])) + record.get("greedy", {}).get("tokens", 0)
            out.flush()
            os.fsync(out.fileno())
            count += len(group)
            elapsed = time.perf_counter() - started
            print(f"[{count}/{len(todo)}] problems {group[0]}-{group[-1]}: {tokens_total} tokens, "
                  f"{tokens_total / elapsed:.1f} tok/s, {elapsed / count * (len(todo) - count) / 60:.0f} min to go",
                  file=sys.stderr, flush=True)

if __name__ == "__main__":
    main()
