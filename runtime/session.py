"""A model made ready to generate: resolve the reference, validate the file, plan, load.

Every command that generates (run, chat, batch, reasoning mode) goes through `load_model`, so
they all share the same validation, the same plan and the same engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..errors import ContextOverflowError
from .engine import ContextConfig, Engine
from .gguf_checks import check_vocabulary
from .gguf_file import GGUFInfo, read_gguf
from .models import ResolvedModel
from .templates import build_prompt
from ..units import round_up

CONTEXT_STEP = 256
FITTED_MIN = 256  # the smallest context a one-shot answer is given (`fit_context`)


@dataclass
class PlanRequest:
    """What the user asked for; None means 'let the planner decide'."""

    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    n_seq: int = 1
    max_tokens: int | None = None
    kv_unified: bool = True  # False: one KV stream per sequence (batch: many unrelated prompts)
    # True: speculative decoding will verify drafts here; on a CPU, llama.cpp then keeps flash
    # attention (calls of several rows are exact there, so greedy drafts can be checked)
    speculative: bool = False


@dataclass
class LoadedModel:
    resolved: ResolvedModel
    info: GGUFInfo
    plan: Any  # runtime.plan.FitPlan
    engine: Engine
    request: PlanRequest = field(default_factory=PlanRequest)
    _curve: Any = field(default=None, repr=False)  # ((threads, gpu layers), CostCurve)
    fitted: bool = False  # the context was sized to one answer (`fit_context`), not as planned

    @property
    def name(self) -> str:
        return self.resolved.name

    @property
    def reasoning_style(self):
        """The reasoning prompt this model family was trained with (`prompts.style_for_gguf`)."""
        from .prompts import style_for_gguf

        return style_for_gguf(self.info.metadata)

    @property
    def has_template(self) -> bool:
        return self.info.chat_template is not None

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """Tokens for a conversation: the chat template when the model has one, else plain text."""
        model = self.engine.model
        prompt = build_prompt(self.info.chat_template, messages, model.bos_text, model.eos_text, model.add_bos)
        return self.engine.tokenize(prompt.text, add_special=True)

    def ensure_context(self, tokens_needed: int) -> None:
        """Grow the context when a prompt needs it (and the user did not fix --ctx); else fail loudly."""
        if tokens_needed <= self.engine.n_ctx:
            return
        trained = int(self.info.arch_value("context_length", 0) or 0)
        n_seq = max(1, self.request.n_seq)
        if self.request.ctx is None and (not trained or tokens_needed <= trained * n_seq):
            self.resize(n_seq, tokens_needed)
            return
        limit = self.engine.n_ctx
        raise ContextOverflowError(
            f"prompt + max tokens need {tokens_needed} tokens, the context holds {limit}: "
            f"{tokens_needed - limit} tokens over",
            hint="raise --ctx (up to the model's trained context), lower --max-tokens or shorten the prompt",
        )

    def fit_context(self, tokens_needed: int) -> None:
        """Size the context to one answer (prompt + max tokens, at least FITTED_MIN) when the
        planner chose it and it is more than twice that: every decode step costs more in a larger
        context (SmolLM2 against llama.cpp's raw loop: 0.98-0.99x at 256 cells, ~0.95x at 512,
        0.93-0.96x at 2048; `hearth run -n 200` 2-4% faster at 512 than 4096). A later request
        that needs more grows it (`ensure_context`); a chat or another layout gets the planned
        context back (`use_layout`)."""
        if self.request.ctx is not None or self.request.n_seq != 1 or not self.engine.config.kv_unified:
            return
        target = max(FITTED_MIN, round_up(tokens_needed, CONTEXT_STEP))
        if target * 2 > self.engine.n_ctx:
            return
        self.resize(1, target)
        self.fitted = True

    def resize(self, n_seq: int, tokens_needed: int) -> None:
        """Re-plan and rebuild the context for `n_seq` sequences sharing `tokens_needed` KV cells.

        The weights stay loaded; the KV cache starts empty. The planner's ctx is per sequence,
        while the engine's cells are shared by all sequences (kv_unified).
        """
        self.request = replace(self.request, n_seq=max(1, n_seq))
        per_seq = self.request.ctx or round_up(-(-tokens_needed // self.request.n_seq), CONTEXT_STEP)
        self.plan = _plan(self.info, self.request, ctx=per_seq)
        self.engine.reconfigure(context_config(self.plan, self.request))

    def use_layout(self, n_seq: int, kv_unified: bool, ctx: int | None = None) -> None:
        """Rebuild the context for `n_seq` sequences in this KV layout (ctx: cells per sequence;
        None: planned), unless it already is; the weights stay loaded."""
        config = self.engine.config
        if (config.n_seq_max, config.kv_unified) == (n_seq, kv_unified) and (ctx is None or self.plan.n_ctx_per_seq == ctx) \
                and not (self.fitted and ctx is None):
            return
        self.request = replace(self.request, n_seq=n_seq, kv_unified=kv_unified)
        self.plan = _plan(self.info, self.request, ctx=ctx)
        self.engine.reconfigure(context_config(self.plan, self.request))
        self.fitted = False

    def cost_curve(self):
        """This machine's decode cost curve for the model and plan (`costs.py`): read from the
        cache, or measured now (a few seconds; uses sequence 0's KV, so before a request)."""
        from .costs import cost_curve

        key = (self.plan.n_threads, self.plan.n_gpu_layers)
        if self._curve is None or self._curve[0] != key:
            self._curve = (key, cost_curve(self.engine, self.resolved.path, *key,
                                           flash_attn=self.engine.config.flash_attn,
                                           kv_type=self.engine.config.kv_type))
        return self._curve[1]

    def close(self) -> None:
        self.engine.close()


def flash_attention_choice(plan, request: PlanRequest | None = None) -> tuple[bool | None, str]:
    """`hardware.flash_attention` for this plan and request, HEARTH_FLASH_ATTN included."""
    import os

    from .hardware import flash_attention

    return flash_attention(plan.n_gpu_layers, os.environ.get("HEARTH_FLASH_ATTN"),
                           request is not None and request.speculative)


def kv_type_choice(plan, request: PlanRequest | None = None) -> tuple[int | None, str | None]:
    """`hardware.speculation_kv_type` for this plan and request, HEARTH_SPEC_KV included."""
    import os

    from .hardware import speculation_kv_type

    return speculation_kv_type(plan.n_gpu_layers, flash_attention_choice(plan, request)[0],
                               request is not None and request.speculative, os.environ.get("HEARTH_SPEC_KV"))


def context_config(plan, request: PlanRequest | None = None) -> ContextConfig:
    return ContextConfig(
        n_ctx=plan.n_ctx, n_batch=plan.n_batch, n_ubatch=plan.n_ubatch, n_seq_max=plan.n_seq,
        n_threads=plan.n_threads, n_threads_batch=plan.n_threads_batch, n_gpu_layers=plan.n_gpu_layers,
        kv_unified=plan.kv_unified,
        flash_attn=flash_attention_choice(plan, request)[0],
        kv_type=kv_type_choice(plan, request)[0],
    )


def _plan(info: GGUFInfo, request: PlanRequest, ctx: int | None = None):
    from .hardware import detect_hardware
    from .plan import fit_plan

    return fit_plan(
        info, detect_hardware(), ctx=ctx if ctx is not None else request.ctx, threads=request.threads,
        gpu_layers=request.gpu_layers, n_seq=request.n_seq, max_tokens=request.max_tokens,
        kv_unified=request.kv_unified,
    )


def load_model(resolved: ResolvedModel, request: PlanRequest | Callable[[GGUFInfo], PlanRequest] | None = None,
               verbose: bool = False) -> LoadedModel:
    """Validate (before llama.cpp sees the file), plan, and load a resolved model
    (`hearth.references.resolve_model` turns what the user typed into one).

    `request` may be a function of the model's header, for a choice that depends on the model
    (e.g. how many sequences fit).
    """
    info = read_gguf(resolved.path)
    check_vocabulary(info)  # llama.cpp aborts on some vocabularies: refuse them first
    request = (request(info) if callable(request) else request) or PlanRequest()
    plan = _plan(info, request)
    engine = Engine(resolved.path, context_config(plan, request), verbose=verbose)
    plan.reasons.append(flash_attention_choice(plan, request)[1])
    if (kv_line := kv_type_choice(plan, request)[1]) is not None:
        plan.reasons.append(kv_line)
    return LoadedModel(resolved, info, plan, engine, request)
