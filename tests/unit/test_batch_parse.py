"""Batch input lines: valid shapes, per-line options, and every bad-line case."""

from __future__ import annotations

import json

import pytest

from hearth.runtime.jsonl_batch import (BatchDefaults, BatchItem, BatchLineError, ResultWriter, parse_line,
                                  read_items)
from hearth.runtime.sampling import SamplingParams

DEFAULTS = BatchDefaults(SamplingParams(temperature=0.5), max_tokens=32, system=None)


def test_prompt_line():
    item = parse_line('{"id": "a", "prompt": "Hi", "max_tokens": 7, "temperature": 0, "seed": 3, "stop": "."}', 1, DEFAULTS)
    assert isinstance(item, BatchItem)
    assert (item.id, item.max_tokens, item.params.temperature, item.params.seed, item.stop) == ("a", 7, 0, 3, (".",))
    assert item.messages == [{"role": "user", "content": "Hi"}]


def test_messages_line_with_system_and_default_id():
    item = parse_line('{"messages": [{"role": "user", "content": "Q"}], "system": "Be brief"}', 4, DEFAULTS)
    assert item.id == 4
    assert item.messages[0] == {"role": "system", "content": "Be brief"}
    assert item.params.temperature == 0.5


@pytest.mark.parametrize("line,needle", [
    ('{"id": 1, "prompt": ', "malformed JSON"),
    ('[1, 2]', "JSON object"),
    ('{"id": 1}', "neither a prompt nor messages"),
    ('{"id": 1, "prompt": "   "}', "neither a prompt nor messages"),
    ('{"id": 1, "prompt": "x", "messages": []}', "not both"),
    ('{"id": 1, "messages": [{"role": "user"}]}', "role and content"),
    ('{"id": 1, "prompt": "x", "max_tokens": 0}', "max_tokens"),
    ('{"id": 1, "prompt": "x", "max_tokens": "9"}', "max_tokens"),
    ('{"id": 1, "prompt": "x", "temperature": "hot"}', "temperature"),
    ('{"id": 1, "prompt": "x", "temperature": 99}', "temperature"),
    ('{"id": 1, "prompt": "x", "stop": [1]}', "stop"),
    ('{"id": [1], "prompt": "x"}', "id must be"),
])
def test_bad_lines_become_error_records(line, needle):
    item = parse_line(line, 9, DEFAULTS)
    assert isinstance(item, BatchLineError)
    assert needle in item.error


def test_duplicate_ids_and_done_ids():
    lines = ['{"id": 1, "prompt": "a"}', '{"id": 2, "prompt": "b"}', '{"id": 1, "prompt": "c"}', "", '{"id": 3, "prompt": "d"}']
    items = list(read_items(lines, DEFAULTS, done_ids={json.dumps(2)}))
    assert [type(i).__name__ for i in items] == ["BatchItem", "BatchLineError", "BatchItem"]
    assert "duplicated id" in items[1].error
    assert items[2].id == 3


def test_writer_repairs_torn_last_line_and_reads_ids(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1, "text": "x"}\n{"id": "b", "text": "y"}\n{"id": 3, "te')
    writer = ResultWriter(path)
    assert writer.done_ids == {json.dumps(1), json.dumps("b")}
    writer.write({"id": 3, "text": "z"})
    writer.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, "b", 3]
