"""Choosing a quant when none is named, and the free-space check (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.errors import DiskSpaceError, DoesNotFitError
from hearth.hub.pull import check_free_space, choose_quant
from hearth.hub.store import ModelFiles

GB = 1 << 30


def model(label: str, size_gb: float) -> ModelFiles:
    quant = None if label == "custom" else label
    return ModelFiles(label, quant, (f"m-{label}.gguf",), int(size_gb * GB))


# Real shapes: Qwen2.5-7B-Instruct-GGUF sizes in GB.
QWEN7B = [model("Q2_K", 3.0), model("Q3_K_M", 3.8), model("Q4_K_M", 4.7), model("Q5_K_M", 5.4),
          model("Q6_K", 6.3), model("Q8_0", 8.1), model("F16", 15.2)]


@pytest.mark.parametrize("candidates, budget_gb, label, why", [
    (QWEN7B, 32, "Q4_K_M", "the preferred quant"),  # plenty of room: still Q4_K_M, not F16
    (QWEN7B, 6, "Q4_K_M", "the preferred quant"),  # 4.7 * 1.2 = 5.6 fits in 6
    (QWEN7B, 5, "Q3_K_M", "largest file that fits"),  # Q4_K_M needs 5.6
    (QWEN7B, 4, "Q2_K", "largest file that fits"),
    ([model("Q8_0", 1.0), model("F16", 2.0)], 8, "Q8_0", "no Q4_K_M in the repo"),
    ([model("Q5_K_M", 1.0), model("F16", 2.0)], 8, "F16", "largest file that fits"),
    ([model("custom", 1.0)], 8, "custom", "largest file that fits"),
])
def test_choose_quant(candidates, budget_gb, label, why):
    choice = choose_quant(candidates, budget_gb * GB)
    assert choice.model.label == label
    assert why in choice.reason
    assert choice.reason.startswith(label)


def test_choose_quant_when_q4_is_too_big_for_memory_but_q8_is_absent():
    # Q4_K_M present but too big, no Q8_0: the reason names both.
    choice = choose_quant([model("Q4_K_M", 5.0), model("Q3_K_S", 2.0)], 4 * GB)
    assert choice.model.label == "Q3_K_S"


def test_choose_quant_nothing_fits():
    with pytest.raises(DoesNotFitError) as err:
        choose_quant(QWEN7B, 2 * GB)
    assert "Q2_K" in err.value.message and "2.0 GB" in err.value.message
    assert choose_quant(QWEN7B, 2 * GB, must_fit=False).model.label == "Q2_K"


def test_check_free_space_refuses_with_the_numbers():
    check_free_space(100, 100, Path("/cache"))
    with pytest.raises(DiskSpaceError) as err:
        check_free_space(5 * GB, 1 * GB, Path("/cache"))
    message = err.value.message
    assert "5.0 GB" in message and "1.0 GB" in message and f"{5 * GB:,}" in message and "/cache" in message
