"""Label scoring (fast): the label trie, the scorers' combination and calibration, the options
of ai_classify / ai_analyze_sentiment (Databricks' MAP forms and JSON text) in DuckDB, and what
a chat model without probabilities gives. Through real vLLM: test_label_scoring_real.py."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import ai_query
from ai_query.catalog import Catalog
from ai_query.engine.backends.backend import ChoiceScores, GenerationRequest
from ai_query.engine.backends.deterministic import DeterministicBackend
from ai_query.engine.local import LocalEngine
from ai_query.engine.vllm.scoring import LabelTrie
from ai_query.errors import ConfigError
from ai_query.options import CallOptions
from ai_query.sql.task_functions import task_spec
from ai_query.udf.label_scores import CALIBRATION_TEMPERATURE, CONTENT_FREE, choose_labels

END = 0


def test_the_trie_reads_each_inner_node_once_and_skips_what_every_label_starts_with() -> None:
    # "The label is" = (7, 8); labels: (7, 8, 1), (7, 8, 2, 3), (7, 8, 2): the last is a
    # prefix of the second, so its node reads the end token too.
    trie = LabelTrie.build([(7, 8, 1), (7, 8, 2, 3), (7, 8, 2)], END)
    assert trie.root == (7, 8)
    assert trie.nodes == {(7, 8): (1, 2), (7, 8, 2): (END, 3)}
    read = {(7, 8): {1: -1.0, 2: -0.5}, (7, 8, 2): {END: -0.1, 3: -2.0}}
    assert trie.scores(read) == [-1.0, -2.5, -0.6]


def test_single_token_labels_cost_one_read() -> None:
    trie = LabelTrie.build([(5,), (6,), (9,)], END)
    assert trie.root == () and list(trie.nodes) == [()]


def _fake_run(
    logprobs: dict[str, list[float] | None], vectors: dict[str, list[float]]
) -> tuple[Any, list[tuple[list[str | None], CallOptions]]]:
    calls: list[tuple[list[str | None], CallOptions]] = []

    def run(requests: list[str | None], call: CallOptions) -> list[Any]:
        calls.append((requests, call))
        if call.endpoint == "emb":
            return [vectors[str(r)] for r in requests]
        return [json.dumps({"label": "b", "logprobs": logprobs[str(r)]}) for r in requests]

    return run, calls


def test_calibration_removes_the_models_prior_over_the_labels() -> None:
    # The model says "a" to everything, a little less so for row 2: calibrated, row 2 is "b".
    blank = [-0.1, -3.0]
    scores = {"p1": [-0.1, -3.0], "p2": [-0.5, -1.5], **{f"cf{t}": blank for t in CONTENT_FREE}}
    run, _ = _fake_run(scores, {})
    chat = CallOptions(endpoint="chat")
    chosen = choose_labels(run, ["a", "b"], ["p1", "p2"], [f"cf{t}" for t in CONTENT_FREE], chat)
    assert [c.label for c in chosen] == ["a", "b"]
    assert chosen[0].confidence == pytest.approx(0.5)  # no evidence beyond the prior
    assert chosen[1].confidence > 0.5
    assert sum(chosen[1].probabilities) == pytest.approx(1.0)


def test_confidence_is_the_tempered_probability_of_the_summed_scores() -> None:
    # Calibrated, row 1 leads by 1.0 nat: its confidence is softened by the temperature.
    blank = [-1.0, -1.0]
    scores = {"p1": [-0.5, -1.5], **{f"cf{t}": blank for t in CONTENT_FREE}}
    run, _ = _fake_run(scores, {})
    (chosen,) = choose_labels(
        run, ["a", "b"], ["p1"], [f"cf{t}" for t in CONTENT_FREE], CallOptions(endpoint="chat")
    )
    assert chosen.label == "a"
    assert chosen.confidence == pytest.approx(1 / (1 + math.exp(-1.0 / CALIBRATION_TEMPERATURE)))
    assert CALIBRATION_TEMPERATURE > 1  # softer than the raw sum


def test_the_embeddings_scorer_joins_the_chat_scorer() -> None:
    flat = [-1.0, -1.0]
    scores = {"p1": flat, "p2": flat, **{f"cf{t}": flat for t in CONTENT_FREE}}
    vectors = {
        "text about apples": [1.0, 0.1],
        "text about pears": [0.1, 1.0],
        "apples": [1.0, 0.0],
        "pears": [0.0, 1.0],
        **{t: [1.0, 1.0] for t in CONTENT_FREE},
    }
    run, calls = _fake_run(scores, vectors)
    chosen = choose_labels(
        run, ["apples", "pears"], ["p1", "p2"], [f"cf{t}" for t in CONTENT_FREE],
        CallOptions(endpoint="chat"),
        contents=["text about apples", "text about pears"],
        label_texts=["apples", "pears"],
        embeddings="emb",
    )  # fmt: skip
    assert [c.label for c in chosen] == ["apples", "pears"]
    assert all(c.confidence is not None and c.confidence > 0.99 for c in chosen)
    assert [call.endpoint for _, call in calls] == ["chat", "emb"]


def _clustered(n: int) -> tuple[Any, list[str], list[str]]:
    """``n`` rows in two clusters; the labels' own vectors barely tell them apart, and the
    last row of the first cluster leans to the wrong label on its own."""
    flat = [-1.0, -1.0]
    contents = [f"a{i}" for i in range(n // 2)] + [f"b{i}" for i in range(n - n // 2)]
    vectors: dict[str, list[float]] = {
        **{c: [1.0, 0.0, 0.3] for c in contents[: n // 2]},
        **{c: [0.0, 1.0, 0.3] for c in contents[n // 2 :]},
        "x": [0.6, 0.4, 1.0],
        "y": [0.4, 0.6, 1.0],
        **{t: [0.0, 0.0, 1.0] for t in CONTENT_FREE},
    }
    vectors[contents[n // 2 - 1]] = [0.62, 0.38, 0.3]  # nearer the first cluster
    prompts = [f"p{i}" for i in range(n)]
    scores = {**{p: flat for p in prompts}, **{f"cf{t}": flat for t in CONTENT_FREE}}
    scores[f"p{n // 2 - 1}"] = [-2.0, -1.0]  # yet the chat model leans to "y" there
    run, _ = _fake_run(scores, vectors)
    return run, prompts, contents


@pytest.mark.parametrize(("n", "refined"), [(8, True), (6, False)])
def test_a_large_enough_batch_refines_the_labels_from_its_own_rows(n: int, refined: bool) -> None:
    run, prompts, contents = _clustered(n)

    def choose(refine: bool) -> list[str]:
        chosen = choose_labels(
            run, ["x", "y"], prompts, [f"cf{t}" for t in CONTENT_FREE],
            CallOptions(endpoint="chat"), contents=contents, label_texts=["x", "y"],
            embeddings="emb", refine=refine,
        )  # fmt: skip
        return [c.label for c in chosen]

    alone = choose(refine=False)
    assert alone[n // 2 - 1] == "y"  # on its own, the borderline row is mislabelled
    together = choose(refine=True)
    # 8 rows for 2 labels (4 per label): the cluster's centroid pulls the row to "x"; with 6,
    # too few rows make no centroids and each row keeps its own label.
    assert together[n // 2 - 1] == ("x" if refined else "y")
    assert together[: n // 2 - 1] == alone[: n // 2 - 1] == ["x"] * (n // 2 - 1)


def test_a_chat_model_without_probabilities_gives_its_generated_label_and_no_confidence() -> None:
    scores: dict[str, list[float] | None] = {"p1": None, **{f"cf{t}": None for t in CONTENT_FREE}}
    run, _ = _fake_run(scores, {})
    chosen = choose_labels(
        run, ["a", "b"], ["p1"], [f"cf{t}" for t in CONTENT_FREE], CallOptions(endpoint="chat")
    )
    assert [(c.label, c.confidence) for c in chosen] == [("b", None)]


class _NoProbabilities(DeterministicBackend):
    """A chat model that gives no probabilities, as an external provider."""

    async def score_choices(self, text: str, request: GenerationRequest) -> ChoiceScores | None:
        return None


@pytest.fixture
def con() -> Any:
    c = ai_query.connect(
        engine=LocalEngine(Catalog.default(), backend_factory=DeterministicBackend)
    )
    c.execute("CREATE TABLE t (id INTEGER, c VARCHAR)")
    c.executemany("INSERT INTO t VALUES (?, ?)", [(1, "my card was charged twice"), (2, None)])
    yield c
    c.close()


def _column(con: Any, sql: str) -> tuple[str, list[Any]]:
    rel = con.sql(sql)
    return str(rel.types[0]), [r[0] for r in rel.fetchall()]


LABELS = "ARRAY('billing', 'shipping', 'account')"


@pytest.mark.parametrize(
    "options",
    [
        "MAP {'enableConfidenceScores': true}",
        "map(['enableConfidenceScores'], ['true'])",
        """'{"enableConfidenceScores": true}'""",
    ],
)
def test_confidence_in_duckdb_in_each_form_of_options(con: Any, options: str) -> None:
    typ, values = _column(con, f"SELECT ai_classify(c, {LABELS}, {options}) FROM t ORDER BY id")
    assert typ == 'STRUCT("label" VARCHAR, confidence DOUBLE)'
    assert values[1] is None
    assert values[0]["label"] in ("billing", "shipping", "account")
    assert 1 / 3 < values[0]["confidence"] <= 1.0
    typ, values = _column(
        con, "SELECT ai_analyze_sentiment(c, MAP {'enableConfidenceScores': true}).confidence "
        "FROM t ORDER BY id",
    )  # fmt: skip
    assert typ == "DOUBLE" and values[1] is None and 0.25 < values[0] <= 1.0


def test_databricks_map_and_descriptions_multilabel_and_instructions(con: Any) -> None:
    labels = json.dumps({f"topic{i}": f"subject {i}" for i in range(100)})
    sql = (
        f"SELECT ai_classify(c, '{labels}', map('multilabel', 'true', "
        "'enableConfidenceScores', 'true', 'instructions', 'Support tickets of a bank.')) "
        "FROM t ORDER BY id"
    )
    rel = con.databricks_sql(sql)
    assert str(rel.types[0]) == 'STRUCT("label" VARCHAR, confidence DOUBLE)[]'
    first, missing = [r[0] for r in rel.fetchall()]
    assert missing is None and first
    assert all(item["label"].startswith("topic") for item in first)
    confidences = [item["confidence"] for item in first]
    assert confidences == sorted(confidences, reverse=True)
    assert all(p >= 0.5 * confidences[0] for p in confidences)


def test_bad_options_fail_before_any_row_with_one_clear_error(con: Any) -> None:
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        con.sql(f"SELECT ai_classify(c, {LABELS}, MAP {{'bogus': 1}}) FROM t").fetchall()
    with pytest.raises(ConfigError, match="enableConfidenceScores must be true or false"):
        con.sql(
            f"SELECT ai_classify(c, {LABELS}, MAP {{'enableConfidenceScores': 'maybe'}}) FROM t"
        ).fetchall()
    with pytest.raises(ConfigError, match="scoring must be one of auto, row, generate"):
        task_spec("ai_classify", [["a", "b"], {"scoring": "best"}])
    with pytest.raises(ConfigError, match="needs 2 to 500 labels"):
        task_spec("ai_classify", [[f"l{i}" for i in range(501)]])


def test_without_probabilities_the_label_is_generated_and_confidence_is_null() -> None:
    engine = LocalEngine(Catalog.default(), backend_factory=_NoProbabilities)
    con = ai_query.connect(engine=engine)
    rows = con.sql(
        f"SELECT ai_classify('my card', {LABELS}, MAP {{'enableConfidenceScores': true}})"
    ).fetchall()
    assert rows[0][0]["label"] in ("billing", "shipping", "account")
    assert rows[0][0]["confidence"] is None


def test_scoring_generate_is_guided_decoding_alone(con: Any) -> None:
    _, values = _column(
        con, f"SELECT ai_classify(c, {LABELS}, MAP {{'scoring': 'generate', "
        "'enableConfidenceScores': true}) FROM t ORDER BY id",
    )  # fmt: skip
    assert values[0]["confidence"] is None and values[0]["label"] in (
        "billing",
        "shipping",
        "account",
    )
