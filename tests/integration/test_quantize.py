"""Quantize a converted tiny model to every offered type; each result loads and generates, and
the quality report orders the quants as expected. Also: refusals, imatrix, progress."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_convert_parity import build_checkpoint, smollm_tokenizer  # noqa: E402

from hearth.errors import ConversionError, UsageError  # noqa: E402
from hearth.quantize.convert import convert_checkpoint  # noqa: E402
from hearth.quantize.quality import evaluate_quality, read_text  # noqa: E402
from hearth.quantize.quantize import quantize_file  # noqa: E402
from hearth.runtime.gguf_file import read_gguf  # noqa: E402
from hearth.runtime.scoring import ScoringModel  # noqa: E402

pytestmark = pytest.mark.slow  # end to end through real llama.cpp: seconds per test

TYPES = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "IQ4_XS"]
# the ggml type most of the matrices get (llama.cpp keeps some tensors at higher precision)
MAIN_TENSOR_TYPE = {"F16": "F16", "Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K",
                    "Q4_0": "Q4_0", "IQ4_XS": "IQ4_XS"}


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory, default_model_path):
    """A tiny llama whose rows are multiples of 256 (so K-quants apply), converted to F16."""
    root = tmp_path_factory.mktemp("quant")
    tok = smollm_tokenizer(default_model_path, root / "tok")
    build_checkpoint("llama", tok, root / "tiny", hidden=256, ff=512, layers=2, initializer_range=0.06)
    return convert_checkpoint(root / "tiny", root / "tiny.gguf", "f16").path


@pytest.fixture(scope="module")
def quantized(f16_model):
    out, progress = {}, {}
    for quant in TYPES:
        seen = []
        out[quant] = quantize_file(f16_model, quant, f16_model.with_name(f"tiny-{quant}.gguf"), threads=2,
                                   on_progress=seen.append)
        progress[quant] = seen
    return out, progress


@pytest.mark.parametrize("quant", TYPES)
def test_each_quant_loads_and_generates(quant, quantized):
    results, progress = quantized
    result = results[quant]
    info = read_gguf(result.path)
    kinds = [t.type_name for t in info.tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    assert max(set(kinds), key=kinds.count) == MAIN_TENSOR_TYPE[quant]
    assert progress[quant] and progress[quant][-1].done == progress[quant][-1].total == len(info.tensors)
    assert not list(result.path.parent.glob(".*.tmp"))
    with ScoringModel(result.path, n_ctx=64) as model:
        prompt = model.tokenize("Once upon a time")
        new = model.greedy(prompt, 4)
    assert len(new) == 4 and all(0 <= t < model.n_vocab for t in new)


def test_smaller_types_make_smaller_files(quantized):
    results, _ = quantized
    sizes = [results[q].output_bytes for q in ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")]
    assert sizes == sorted(sizes, reverse=True)


def test_quality_orders_q8_before_q4(f16_model, quantized):
    results, _ = quantized
    text = read_text(None)
    q8 = evaluate_quality(f16_model, results["Q8_0"].path, text, n_ctx=128, max_chunks=2)
    q4 = evaluate_quality(f16_model, results["Q4_K_M"].path, text, n_ctx=128, max_chunks=2)
    same = evaluate_quality(f16_model, f16_model, text, n_ctx=128, max_chunks=1)
    assert q8.tokens_scored == 2 * 63 and q8.chunks == 2
    assert 0 < q8.kld_mean < q4.kld_mean
    assert q8.kld_p99 < q4.kld_p99
    assert q8.top1_agreement >= q4.top1_agreement
    assert same.kld_mean < 1e-9 and same.top1_agreement == 1.0 and same.ppl_ratio == pytest.approx(1.0)


def test_already_quantized_below_target_is_refused(default_model_path, tmp_path):
    # the embedded model is Q4_1: going to Q8_0 cannot bring precision back
    with pytest.raises(ConversionError, match="already Q4_1"):
        quantize_file(default_model_path, "Q8_0", tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())


def test_unknown_type_and_existing_output_are_refused(f16_model, quantized):
    with pytest.raises(UsageError, match="unknown quant type") as refused:
        quantize_file(f16_model, "Q4_K_X")
    assert all(q in refused.value.hint for q in TYPES)
    with pytest.raises(UsageError, match="already exists"):
        quantize_file(f16_model, "Q8_0", f16_model.with_name("tiny-Q8_0.gguf"))


def test_imatrix_is_used(f16_model, quantized, tmp_path):
    import gguf

    # an importance matrix as llama-imatrix writes it: NAME.in_sum2 and NAME.counts per matrix
    info = read_gguf(f16_model)
    writer = gguf.GGUFWriter(tmp_path / "imatrix.gguf", "imatrix")
    writer.add_string("general.type", "imatrix")
    for t in info.tensors:
        if t.name.startswith("blk.") and len(t.shape) == 2:
            writer.add_tensor(f"{t.name}.in_sum2", np.linspace(1, 10, t.shape[0], dtype=np.float32) * 8)
            writer.add_tensor(f"{t.name}.counts", np.array([8.0], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    plain = quantized[0]["IQ4_XS"]
    weighted = quantize_file(f16_model, "IQ4_XS", tmp_path / "weighted.gguf", imatrix_path=tmp_path / "imatrix.gguf")
    assert plain.path.read_bytes() != weighted.path.read_bytes()
    with ScoringModel(weighted.path, n_ctx=32) as model:
        assert len(model.greedy(model.tokenize("Hello"), 2)) == 2
