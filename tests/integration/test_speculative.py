"""Speculative decoding with real models and real llama.cpp.

Greedy output must be exactly plain decode's. Whether the measured cost curve makes drafting
pay depends on the machine, so the mechanics are tested with drafting forced (a flat curve: extra
rows free), where every step drafts and rejections happen; the public API is tested as users
call it, with the machine's own curve. Drafts are checked only in calls as wide as llama.cpp
computes exactly like single rows on this machine (`CostCurve.exact_rows`, measured): where that
is one row (F16 weights on an AVX-512 CPU), no draft may be checked at all, and the tests say so.
"""

from __future__ import annotations

import pytest

import hearth
from hearth.runtime.costs import WIDTHS, CostCurve
from hearth.runtime.hardware import GGML_TYPE_BF16
from hearth.runtime.sampling import SamplingParams
from hearth.runtime.scheduler import GenRequest, Scheduler
from hearth.runtime.speculative import Speculation

def flat(model) -> CostCurve:
    """A curve on which extra rows are free (every step drafts), within the rows the machine
    computes exactly as single rows (measured)."""
    measured = model._loaded.cost_curve()
    return CostCurve((1, 2, 4, 8, 16), (1.0,) * 5, "given", exact_rows=measured.exact_rows, exact_at=measured.exact_at)


CODE = '''def parse(path):
    with open(path) as handle:
        lines = handle.read().splitlines()
    result = {}
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def load_all(paths):
    return [parse(path) for path in paths]
'''
# minified JSON, then the start of it indented: both test models go on indenting it, so the answer
# copies the reference with other whitespace (drafted by `drafts.LayoutLookup`)
_DOC = ('{"service":"hearth","version":3,"limits":{"max_tokens":4096,"parallel":16,"timeout_s":30},'
        '"tags":["lookup","draft","batch"],"owner":{"team":"runtime","id":7,"contact":"ops@example.org"}}')
REFORMAT = ("Minified JSON:\n" + _DOC + "\n\nThe same JSON, indented with two spaces:\n"
            '{\n  "service": "hearth",\n  "version": 3,\n  ')
PROMPTS = [
    "Rename the function parse to parse_config in this code. Output only the code.\n\n" + CODE,
    'Reformat this JSON with two-space indentation:\n{"name": "hearth", "version": 3, "tags": ["llm", "local"], '
    '"owner": {"name": "Ada", "id": 7}}',
    "Write a short story about a lighthouse keeper.",
    "Count from 1 to 25, separated by commas.",
    REFORMAT,
    # ~230 prompt tokens, decoded on past 256 positions, where with an F16 KV cache this project's Xeon computes
    # no call of several rows exactly
    "Repeat this code exactly, twice.\n\n" + CODE + "\n" + CODE,
]
N_TOKENS = 80


def generate(model, tokens: list[int], speculation=None, params=SamplingParams(temperature=0.0), n=N_TOKENS):
    scheduler = Scheduler(model._loaded.engine)
    request = GenRequest(tokens, params, n, speculation=speculation)
    return scheduler.run([request])[0][0]


def check_lookup_equals_plain(path, template: bool) -> None:
    drafted = accepted = 0
    # loaded to speculate: on a CPU that keeps flash attention, the kernel with exact calls
    with hearth.load(str(path), ctx=2048, options=hearth.GenerationOptions(lookup=True)) as model:
        curve = model._loaded.cost_curve()
        exact_rows = curve.exact_rows
        if model._loaded.plan.n_gpu_layers == 0:  # on the CPU: a BF16 KV cache, whose calls stay on one kernel
            assert model._loaded.engine.config.kv_type == GGML_TYPE_BF16
        for prompt in PROMPTS:
            tokens = model.prompt_tokens(prompt, template=template)
            plain = generate(model, tokens)
            forced = generate(model, tokens, Speculation("lookup", flat(model), max_draft=8))
            assert forced.tokens == plain.tokens, prompt[:40]
            assert forced.finish_reason == plain.finish_reason
            if prompt is PROMPTS[-1] and curve.exact_rows_from(len(tokens)) > 1 and any(
                    line.strip() in plain.text for line in CODE.splitlines() if len(line.strip()) >= 20):
                assert forced.spec.stats.drafted > 0  # it copies a line of the code (up to ~320 positions), exact calls: drafted
            if prompt is REFORMAT and curve.exact_rows_from(len(tokens)) > 1 and '"max_tokens": 4096,\n' in plain.text:
                assert forced.spec.stats.layout_drafted > 0  # it indents what the prompt has minified
            drafted, accepted = drafted + forced.spec.stats.drafted, accepted + forced.spec.stats.accepted
            chosen = model.generate(prompt, template=template, temperature=0, max_tokens=N_TOKENS, lookup=True)
            assert chosen.text == plain.text, prompt[:40]
            assert chosen.timings["speculative"]["mode"] == "lookup"
    if exact_rows > 1:
        assert 0 < accepted < drafted  # drafts were kept and rejected: both paths ran
    else:
        assert drafted == 0  # no call is exact beyond one row here: nothing may be drafted


@pytest.mark.slow
def test_greedy_lookup_equals_plain_decode_smollm2(default_model_path):
    check_lookup_equals_plain(default_model_path, template=True)


@pytest.mark.slow
def test_greedy_lookup_equals_plain_decode_gemma(gemma_model_path):
    check_lookup_equals_plain(gemma_model_path, template=False)


def test_sampling_with_lookup_is_seeded_and_keeps_drafts(default_model_path):
    params = SamplingParams(temperature=0.8, top_k=20, seed=5)
    with hearth.load(str(default_model_path), ctx=2048) as model:
        tokens = model.prompt_tokens(PROMPTS[0])
        runs = [generate(model, tokens, Speculation("lookup", flat(model), max_draft=6), params, 60) for _ in range(2)]
        assert runs[0].tokens == runs[1].tokens  # the seed fixes the draws, acceptance included
        assert runs[0].spec.stats.accepted > 0
        assert model._loaded.engine.model.n_vocab > max(runs[0].tokens)


def test_cost_curve_is_measured_once_then_cached(default_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))
    with hearth.load(str(default_model_path), ctx=1024) as model:
        curve = model._loaded.cost_curve()
        assert curve.source == "measured" and curve.widths == WIDTHS
        assert curve.relative(1) == 1.0 and min(curve.seconds) > 0
        assert len(list((tmp_path / "cost-curves").glob("*.json"))) == 1
    with hearth.load(str(default_model_path), ctx=1024) as model:
        again = model._loaded.cost_curve()
        assert again.source == "cached" and again.seconds == curve.seconds
        done = model.generate(PROMPTS[1], temperature=0, max_tokens=12, lookup=True)
        assert done.timings["speculative"]["cost_curve"]["source"] == "cached"
    with hearth.load(str(default_model_path), ctx=1024, threads=1) as model:
        assert model._loaded.cost_curve().source == "measured"  # another thread count, another curve


@pytest.fixture(scope="session")
def smollm2_f16(default_model_path, tmp_path_factory):
    """SmolLM2-135M in F16: the Q4_1 weights dequantized by llama.cpp (no F16 checkpoint ships
    offline), so a real F16 model of the same vocabulary for the Q4_1 to draft for."""
    from hearth.runtime.engine import quantize_gguf

    path = tmp_path_factory.mktemp("f16") / "SmolLM2-135M-Instruct.F16.gguf"
    quantize_gguf(default_model_path, path, "F16", allow_requantize=True)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target_is_f16", [pytest.param(True, id="q4_1-drafts-for-f16"),
                                           pytest.param(False, id="f16-drafts-for-q4_1")])
def test_draft_model_greedy_equals_plain_decode(target_is_f16, smollm2_f16, default_model_path):
    """SmolLM2 Q4_1 drafting for SmolLM2 F16, as the issue asks; and the other way round, since an
    F16 model's multi-row calls may not be exact on this CPU (then nothing is drafted for it)."""
    target, draft_path = (smollm2_f16, default_model_path) if target_is_f16 else (default_model_path, smollm2_f16)
    drafted = accepted = 0
    with hearth.load(str(target), ctx=2048) as model:
        draft = model.draft_model(str(draft_path))
        exact_rows = model._loaded.cost_curve().exact_rows
        for prompt in PROMPTS[:3]:
            tokens = model.prompt_tokens(prompt)
            plain = generate(model, tokens)
            forced = generate(model, tokens, Speculation("draft", flat(model), draft.engine, max_draft=5))
            assert forced.tokens == plain.tokens, prompt[:40]
            drafted, accepted = drafted + forced.spec.stats.drafted, accepted + forced.spec.stats.accepted
        chosen = model.generate(PROMPTS[1], temperature=0, max_tokens=N_TOKENS, draft=str(draft_path))
        assert chosen.text == generate(model, model.prompt_tokens(PROMPTS[1])).text
        assert chosen.timings["speculative"]["mode"] == "draft"
    if exact_rows > 1:
        assert accepted > 0.5 * drafted > 0  # the same weights at another precision mostly agree
    else:
        assert drafted == 0


def test_draft_model_with_another_vocabulary_is_refused(default_model_path, gemma_model_path):
    with hearth.load(str(default_model_path), ctx=1024) as model:
        with pytest.raises(hearth.UsageError, match="vocabulary: 262144 tokens against 49152"):
            model.generate("Hi", draft=str(gemma_model_path))
        assert model.generate("Hi", temperature=0, max_tokens=4).text  # the model still works


def test_speculation_is_refused_where_many_answers_run(default_model_path):
    with hearth.load(str(default_model_path), ctx=1024) as model:
        with pytest.raises(hearth.UsageError, match="one answer at a time"):
            model.reason("What is 2+2?", samples=2, lookup=True)
        with pytest.raises(hearth.UsageError, match="one answer at a time"):
            model.batch([{"id": 1, "prompt": "Hi"}], lookup=True)
        with pytest.raises(hearth.UsageError, match="not both"):
            model.generate("Hi", lookup=True, draft=str(default_model_path))


def _serve_one(service, prompt: str, **prepare):
    """A request through a GenerationService (what `hearth serve` runs on): its JobResult."""
    import queue

    events: queue.Queue = queue.Queue()
    job = service.prepare([{"role": "user", "content": prompt}], template=True, **prepare)
    service.submit(job, lambda batch: [events.put(e) for e in batch], stream=False)
    while True:
        event = events.get(timeout=120)
        if event[0] != "text":
            assert event[0] == "done", event
            return event[1]


@pytest.mark.slow
def test_a_served_request_drafts_from_its_prediction_and_keeps_the_greedy_text(default_model_path):
    """Per request in a server: lookup drafts from the prompt and from OpenAI-style predicted
    text, checked exactly as in `hearth run --lookup`: the greedy text is the plain one."""
    options = hearth.GenerationOptions(temperature=0, max_tokens=N_TOKENS)
    with hearth.load(str(default_model_path), options=options.merged(lookup=True)) as model:
        service = model.service(2, ctx=1024)
        service.curve = flat(model)  # drafting always pays: what is tested is the wiring, on any CPU
        try:
            prompt = PROMPTS[0]  # the rename: its answer repeats most of the prompt
            plain = _serve_one(service, prompt, speculative="off")
            assert plain.drafts is None
            predicted = _serve_one(service, prompt, prediction=plain.choices[0].text)
            looked_up = _serve_one(service, prompt)  # the service's default (lookup), from the prompt alone
            first = len(model.prompt_tokens(prompt, template=True))
        finally:
            service.stop()
    assert predicted.choices[0].text == plain.choices[0].text == looked_up.choices[0].text
    accepted, rejected = predicted.drafts
    if service.curve.exact_rows_from(first) > 1:  # this machine checks greedy drafts of a row or more here
        assert accepted > 0
    else:
        assert accepted == rejected == 0
    assert looked_up.drafts is not None
