"""The task functions' argument checks, prompts, guided outputs and result handling (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlglot

from ai_query.errors import ConfigError, UnsupportedCallError
from ai_query.sql.mask import mask_entities
from ai_query.sql.response_format import parse_response_format, resolve_output
from ai_query.sql.task_calls import bind_task_call, find_task_calls
from ai_query.sql.task_functions import (
    SENTIMENTS,
    TASK_FUNCTIONS,
    parse_labels,
    task_spec,
)
from ai_query.sql.transpile import parse_sql


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        pytest.param("ai_translate", ["xx"], "unsupported language 'xx'", id="bad-language"),
        pytest.param("ai_translate", [None], "unsupported language", id="null-language"),
        pytest.param("ai_classify", [["a"]], "needs 2 to 500 labels, got 1", id="one-label"),
        pytest.param("ai_classify", [[f"l{i}" for i in range(501)]], "got 501", id="501-labels"),
        pytest.param("ai_classify", [["a", "a"]], "distinct", id="duplicate-labels"),
        pytest.param("ai_classify", [["a", ""]], "non-empty", id="empty-label"),
        pytest.param("ai_classify", ["not json"], "JSON array/object", id="bad-json"),
        pytest.param("ai_extract", [[]], "the schema names no field", id="no-extract-labels"),
        pytest.param("ai_summarize", [-1], "non-negative integer", id="negative-words"),
        pytest.param("ai_summarize", ["ten"], "non-negative integer", id="text-words"),
    ],
)
def test_bad_constant_arguments_are_config_errors(function: str, args: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task_spec(function, args)


@pytest.mark.parametrize(
    ("function", "args"),
    [
        pytest.param("ai_classify", [], id="classify-without-labels"),
        pytest.param("ai_gen", ["extra"], id="gen-with-two"),
        pytest.param("ai_summarize", [1, 2], id="summarize-with-three"),
        pytest.param("ai_nothing", [], id="unknown-function"),
    ],
)
def test_wrong_argument_counts(function: str, args: list) -> None:
    with pytest.raises(UnsupportedCallError):
        task_spec(function, args)


def test_labels_forms() -> None:
    assert parse_labels("ai_classify", ["a", "b"]) == (("a", "b"), ())
    assert parse_labels("ai_classify", '["a", "b"]') == (("a", "b"), ())
    labels, descriptions = parse_labels("ai_classify", '{"bug": "a defect", "feature": "new"}')
    assert labels == ("bug", "feature") and descriptions == ("a defect", "new")
    prompt = task_spec("ai_classify", ['{"bug": "a defect", "feature": "new"}']).prompt("x")
    assert "bug: a defect" in prompt


def test_guided_outputs() -> None:
    sentiment = task_spec("ai_analyze_sentiment")
    output = resolve_output(None, sentiment.response_format(), "llm/v1/chat")
    assert output.choice == SENTIMENTS and output.sql_type.is_string
    classify = task_spec("ai_classify", [["urgent", "not urgent"]])
    assert resolve_output(None, classify.response_format(), "llm/v1/chat").choice == (
        "urgent",
        "not urgent",
    )
    extract = task_spec("ai_extract", [["person", "location"]])
    spec = resolve_output(None, extract.response_format(), "llm/v1/chat")
    assert spec.json_schema is not None and spec.parse_json
    assert spec.json_schema["required"] == ["person", "location"]
    assert extract.result_type().to_ddl("spark") == "STRUCT<person: STRING, location: STRING>"
    assert spec.sql_type == extract.result_type()


def test_choice_response_format_is_checked() -> None:
    assert parse_response_format('{"type": "choice", "choice": ["a"]}').choices == ("a",)
    with pytest.raises(ConfigError, match="choice"):
        parse_response_format('{"type": "choice", "choice": []}')
    with pytest.raises(ConfigError, match="choice"):
        parse_response_format('{"type": "choice", "choice": [1, 2]}')


def test_results_are_finished() -> None:
    extract = task_spec("ai_extract", [["person", "location"]])
    assert extract.finish("x", {"person": "Ann", "location": ""}) == {
        "person": "Ann",
        "location": None,
    }
    summarize = task_spec("ai_summarize", [3])
    assert summarize.finish("x", " one two three four ") == "one two three"
    assert task_spec("ai_summarize", [0]).finish("x", "a b c d") == "a b c d"
    assert task_spec("ai_summarize").max_words == 50


def test_mask_replaces_every_listed_entity_that_occurs() -> None:
    text = "John Doe lives in New York. Mail john@x.com or John Doe."
    masked = mask_entities(text, {"person": ["John Doe", "Nobody"], "email": ["john@x.com"]})
    assert masked == "[MASKED] lives in New York. Mail [MASKED] or [MASKED]."
    assert mask_entities("abc", {"person": None}) == "abc"


@pytest.mark.parametrize("read", ["databricks", "spark", "duckdb"])
def test_every_function_binds_from_sql(read: str) -> None:
    labels = "['a', 'b']" if read == "duckdb" else "array('a', 'b')"
    calls = {
        "ai_analyze_sentiment": "ai_analyze_sentiment(c)",
        "ai_classify": f"ai_classify(c, {labels})",
        "ai_extract": f"ai_extract(c, {labels})",
        "ai_filter": "ai_filter('Is it about a refund?', c)",
        "ai_fix_grammar": "ai_fix_grammar(c)",
        "ai_gen": "ai_gen(c)",
        "ai_mask": f"ai_mask(c, {labels})",
        "ai_similarity": "ai_similarity(c, d)",
        "ai_summarize": "ai_summarize(c, 10)",
        "ai_translate": "ai_translate(c, 'de')",
    }
    assert set(calls) == set(TASK_FUNCTIONS)
    tree = parse_sql("SELECT " + ", ".join(calls.values()) + " FROM t", read)[0]
    bound = {call.spec.function: call for call in find_task_calls(tree)}
    assert set(bound) == set(TASK_FUNCTIONS)
    assert bound["ai_classify"].spec.labels == ("a", "b")
    assert bound["ai_summarize"].spec.max_words == 10
    assert len(bound["ai_similarity"].inputs) == 2
    assert len(bound["ai_filter"].inputs) == 2


@pytest.mark.parametrize(
    ("call", "inputs"),
    [
        pytest.param("ai_filter('Is it about a refund? ' || c)", 1, id="predicate-only"),
        pytest.param("ai_filter('Is it about a refund?', c)", 2, id="predicate-and-content"),
    ],
)
def test_ai_filter_binds_its_row_inputs(call: str, inputs: int) -> None:
    bound = bind_task_call(sqlglot.parse_one(f"SELECT {call}").expressions[0])
    assert len(bound.inputs) == inputs
    assert bound.spec.result_type().kind == "BOOLEAN"
    assert json.loads(bound.spec.response_format() or "") == {
        "type": "choice",
        "choice": ["true", "false"],
    }


def test_ai_filter_takes_one_or_two_arguments() -> None:
    with pytest.raises(UnsupportedCallError, match="takes 1 or 2 arguments"):
        bind_task_call(sqlglot.parse_one("SELECT ai_filter('p', c, 'x')").expressions[0])


def test_ai_filter_answers_are_booleans() -> None:
    spec = task_spec("ai_filter", [None])
    assert spec.finish("", " True ") is True and spec.finish("", "false") is False
    assert "Statement: Is it red?" in spec.filter_prompt("Is it red?", "a red car")
    assert "Text: a red car" in spec.filter_prompt("Is it red?", "a red car")
    assert "Text:" not in spec.filter_prompt("Is the sky red?")


def test_non_constant_labels_are_refused() -> None:
    node = sqlglot.parse_one("SELECT ai_extract(c, labels_column) FROM t").expressions[0]
    with pytest.raises(UnsupportedCallError, match="must be a constant"):
        bind_task_call(node)


def test_prompts_name_the_task() -> None:
    assert "German" in task_spec("ai_translate", ["de"]).prompt("Hello")
    assert "at most 10 words" in task_spec("ai_summarize", [10]).prompt("x")
    assert task_spec("ai_gen").prompt("Write a haiku") == "Write a haiku"
    assert json.loads(task_spec("ai_classify", [["x", "y"]]).response_format() or "") == {
        "type": "choice",
        "choice": ["x", "y"],
    }


def test_mask_asks_for_bounded_entities() -> None:
    spec = task_spec("ai_mask", [["person", "email"]])
    output = resolve_output(spec.return_type(), spec.response_format(), "llm/v1/chat")
    assert output.sql_type.is_string and output.json_schema is not None
    person = output.json_schema["properties"]["person"]
    assert person == {"type": "string", "maxLength": 64}
    assert spec.finish("Ann met Bob", '{"person": "Ann", "email": ""}') == "[MASKED] met Bob"
    with pytest.raises(ValueError, match="not valid JSON"):
        spec.finish("Ann", '{"person": ["An')


@pytest.mark.parametrize(
    ("sql", "mentions"),
    [
        pytest.param("SELECT ai_query('e', x)", True, id="ai_query"),
        pytest.param("select AI_CLASSIFY (x, ['a', 'b'])", True, id="task-upper-space"),
        pytest.param("SELECT ai_score, said_hello FROM t", False, id="similar-names"),
        pytest.param("SELECT 1", False, id="plain"),
    ],
)
def test_mentions_ai_functions(sql: str, mentions: bool) -> None:
    from ai_query.sql.task_calls import mentions_ai_functions

    assert mentions_ai_functions(sql) is mentions


def test_ai_extract_takes_databricks_typed_nested_described_fields() -> None:
    schema = {
        "invoice_id": "the number printed at the top",
        "total": {"type": "number", "description": "amount due, in the invoice's currency"},
        "paid": {"type": "boolean"},
        "status": {"type": "enum", "enum": ["open", "overdue", "closed"]},
        "vendor": {"type": "object", "properties": {"name": "string", "year": {"type": "integer"}}},
        "items": {"type": "array", "items": {"type": "object", "properties": ["sku", "qty"]}},
    }
    extract = task_spec("ai_extract", [json.dumps(schema), {"instructions": "Invoices."}])
    assert extract.result_type().to_ddl("databricks") == (
        "STRUCT<invoice_id: STRING, total: DOUBLE, paid: BOOLEAN, status: STRING, "
        "vendor: STRUCT<name: STRING, year: BIGINT>, "
        "items: ARRAY<STRUCT<sku: STRING, qty: STRING>>>"
    )
    output = resolve_output(None, extract.response_format(), "llm/v1/chat")
    assert output.sql_type == extract.result_type()
    fields = output.json_schema["properties"]
    assert fields["total"]["description"] == "amount due, in the invoice's currency"
    assert fields["status"]["anyOf"][0]["enum"] == ["open", "overdue", "closed"]
    assert {"type": "null"} in fields["paid"]["anyOf"]  # every field is optional
    assert extract.prompt("x").startswith("Invoices.\n\n")
    answer = {"invoice_id": " A-1 ", "total": 9.5, "paid": None, "status": "open",
              "vendor": {"name": "Acme", "year": 1999}, "items": []}  # fmt: skip
    assert extract.finish("x", answer)["invoice_id"] == "A-1"
    assert extract.finish("x", answer)["vendor"] == {"name": "Acme", "year": 1999}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"a": {"type": "date"}}, "field 'a' has type 'date'"),
        ({"a": {"type": "enum"}}, "enum field 'a' needs its values"),
        ({"a": 3}, "field 'a' must be a description or an object"),
        ({f"f{i}": "x" for i in range(101)}, "more than 100 fields"),
        ({"a": {"type": "object", "properties": 7}}, "array of field names or an object"),
    ],
)
def test_bad_extract_schemas_fail_with_one_clear_error(schema: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task_spec("ai_extract", [json.dumps(schema)])
    with pytest.raises(ConfigError, match="unknown option 'multilabel'"):
        task_spec("ai_extract", [["a"], {"multilabel": True}])


def test_ai_extract_with_confidence_answers_the_fields_and_their_probabilities() -> None:
    spec = task_spec("ai_extract", [["person", "age"], {"enableConfidenceScores": "true"}])
    assert spec.result_type().to_ddl("databricks") == (
        "STRUCT<response: STRUCT<person: STRING, age: STRING>, "
        "confidence: STRUCT<person: DOUBLE, age: DOUBLE>>"
    )
    fmt = json.loads(spec.response_format() or "")
    assert fmt["confidence"] is True
    assert fmt["returnType"] == "STRUCT<person: STRING, age: STRING>"
    answer = {"response": {"person": " Ann ", "age": "none"}, "confidence": {"person": 0.5}}
    assert spec.finish("Ann", answer) == {
        "response": {"person": "Ann", "age": None},  # as without confidence: "none" is NULL
        "confidence": {"person": 0.5},
    }


def test_ai_classify_tells_the_model_as_many_labels_as_fit() -> None:
    from ai_query.sql.task_functions import PROMPT_LABEL_CHARS

    few = task_spec("ai_classify", [json.dumps({"a": "first", "b": ""})])
    assert "- a: first\n- b\n" in few.prompt("hello")
    # Long descriptions are left out of the prompt before the labels are.
    described = {f"label {i}": "x" * 40 for i in range(100)}
    spec = task_spec("ai_classify", [json.dumps(described)])
    assert "- label 99\n" in spec.prompt("hello") and "x" * 40 not in spec.prompt("hello")
    assert spec.label_texts()[0] == "label 0: " + "x" * 40  # the embeddings still see them
    # 500 long labels: none listed (a 2,048-token model could not read them), all scored.
    many = [f"a rather long label number {i}" for i in range(500)]
    assert len("".join(many)) > PROMPT_LABEL_CHARS
    spec = task_spec("ai_classify", [many])
    assert "label number" not in spec.prompt("hello") and spec.choices() == tuple(many)
