"""Bad `--schema` files: one line on stderr and exit 2, never a traceback or a runaway grammar."""

from __future__ import annotations

import json

import pytest


def _one_line_error(done, needle: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[:5]
    assert needle in lines[0], lines[0]
    assert done.stdout == ""




def test_grammar_file_not_utf8_or_empty(hearth, tmp_path):
    path = tmp_path / "bad.gbnf"
    path.write_bytes(b'root ::= "\xff\xfe"')
    _one_line_error(hearth("run", "hi", "--grammar", str(path)), "not UTF-8 text")
    path.write_text("")
    _one_line_error(hearth("run", "hi", "--grammar", str(path)), "is empty")


# name -> (schema, what the one-line error says)
BAD_SCHEMAS = {
    "unknown type": ({"type": "nosuchtype"}, "Unrecognized schema"),
    "type list with a number": ({"type": ["string", 5]}, "Unrecognized schema"),
    "dangling $ref": ({"$ref": "#/definitions/nope"}, "invalid JSON schema"),
    "remote $ref": ({"$ref": "http://example.com/s.json"}, "Unsupported ref"),
    "not an object": ([{"type": "string"}], "must be a JSON object"),
    "property that is not a schema": ({"type": "object", "properties": {"a": 5}}, "invalid JSON schema"),
    "oneOf that is not a list": ({"oneOf": 5}, "invalid JSON schema"),
    "huge minLength": ({"type": "string", "minLength": 100_000_000}, "minLength 100000000"),
    "huge maxItems": ({"type": "array", "items": {"type": "string"}, "maxItems": 10**9}, "maxItems"),
    "pattern without anchors": ({"type": "string", "pattern": "a+"}, "Pattern must start with"),
    "pattern repeating enormously": ({"type": "string", "pattern": "^((a{100}){100}){100}$"}, "repeats to more than"),
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "invalid JSON schema"),
}


@pytest.mark.parametrize("name", list(BAD_SCHEMAS))
def test_bad_schema_is_one_line(hearth, tmp_path, name):
    schema, needle = BAD_SCHEMAS[name]
    path = tmp_path / "bad.schema.json"
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    _one_line_error(hearth("run", "hi", "-n", "4", "--schema", str(path), timeout=60), needle)


def test_bad_schema_in_batch_is_one_line(hearth, tmp_path):
    src, schema = tmp_path / "in.jsonl", tmp_path / "s.json"
    src.write_text('{"id": 1, "prompt": "hi"}\n')
    schema.write_text(json.dumps({"type": "nosuchtype"}))
    _one_line_error(hearth("batch", str(src), "--json-schema", str(schema)), "Unrecognized schema")
