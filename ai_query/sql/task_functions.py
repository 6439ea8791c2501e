"""Databricks AI Functions (``ai_classify``, ``ai_extract``, ...): arguments, prompts, results.

Each task function is answered by a catalog endpoint (chat, or embeddings for
``ai_similarity``) through the same engine calls as ``ai_query``. This module holds what is
pure about them: :func:`task_spec` checks a call's constant arguments (labels, language,
word limit) once, so a bad call fails before any row runs, and the :class:`TaskSpec` it
returns writes the prompt for a row and says how the output is constrained (guided choice for
labels, a JSON schema for extraction). :mod:`ai_query.sql.task_calls` does the same from SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ai_query.errors import ConfigError, UnsupportedCallError
from ai_query.sql.extract_schema import ExtractField, object_schema, parse_fields
from ai_query.sql.mask import MASK_MAX_CHARS, mask_entities, mask_format
from ai_query.sql.response_format import with_confidence
from ai_query.sql.types import SQLType
from ai_query.tasks import Task

#: Each task function's parameters, in positional order; a trailing ``?`` marks an optional one.
TASK_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "ai_analyze_sentiment": ("content", "options?"),
    "ai_classify": ("content", "labels", "options?"),
    "ai_extract": ("content", "labels", "options?"),
    "ai_filter": ("predicate", "content?"),
    "ai_fix_grammar": ("content",),
    "ai_gen": ("prompt",),
    "ai_mask": ("content", "labels"),
    "ai_similarity": ("expr1", "expr2"),
    "ai_summarize": ("content", "max_words?"),
    "ai_translate": ("content", "to_lang"),
}
#: The answers ai_analyze_sentiment may give, and what each means (told to the model).
SENTIMENT_MEANINGS: dict[str, str] = {
    "positive": "the writer is pleased",
    "negative": "the writer is unhappy or complains",
    "neutral": "plain facts, no opinion",
    "mixed": "both praise and complaint",
}
SENTIMENTS: tuple[str, ...] = tuple(SENTIMENT_MEANINGS)
#: The functions whose label is chosen by scoring (:mod:`ai_query.udf.label_scores`).
SCORED_FUNCTIONS: tuple[str, ...] = ("ai_analyze_sentiment", "ai_classify")
#: Languages ai_translate supports (Databricks' list), code -> name.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "it": "Italian",
    "pt": "Portuguese",
    "hi": "Hindi",
    "es": "Spanish",
    "th": "Thai",
}
#: ai_filter's guided answers, and the BOOLEAN each one means.
FILTER_ANSWERS: dict[str, bool] = {"true": True, "false": False}
#: ai_summarize's word limit when none is given.
DEFAULT_MAX_WORDS = 50
MIN_CLASSIFY_LABELS, MAX_CLASSIFY_LABELS = 2, 500
#: The longest list of labels ai_classify's prompt gives the model (about 1,000 tokens of
#: English, so that the list, a text and the answer fit a 2,048-token model); longer lists are
#: not told but still scored (see :meth:`TaskSpec._classify_ask`).
PROMPT_LABEL_CHARS = 4000
#: The options of the label functions: Databricks' ai_classify options, and ``scoring`` (an
#: ai_query extension: ``auto``, the scorers of :mod:`ai_query.udf.label_scores` with the
#: batch's refinement; ``row``, the same without it, so each row's label depends on that row
#: alone; or ``generate``, the label generated under guided decoding alone).
LABEL_OPTIONS: tuple[str, ...] = (
    "enableConfidenceScores", "multilabel", "instructions", "version", "scoring",
)  # fmt: skip
LABEL_SCORING: tuple[str, ...] = ("auto", "row", "generate")
#: The options of ai_extract (Databricks' names).
EXTRACT_OPTIONS: tuple[str, ...] = ("enableConfidenceScores", "instructions", "version")
#: In a multilabel answer: every label at least this share of the best label's probability.
MULTILABEL_SHARE = 0.5
MAX_EXTRACT_LABELS = 20


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task function call's constant arguments, checked."""

    function: str
    """The function's name, lower case."""
    labels: tuple[str, ...] = ()
    """Labels (ai_classify), entity kinds (ai_extract, ai_mask)."""
    descriptions: tuple[str, ...] = ()
    """A description per label (ai_classify's JSON object form), else empty."""
    fields: tuple[ExtractField, ...] = ()
    """ai_extract's fields (typed, described, nested; :mod:`ai_query.sql.extract_schema`)."""
    to_lang: str | None = None
    """Target language code (ai_translate)."""
    max_words: int | None = None
    """Word limit (ai_summarize); 0 means no limit."""
    confidence: bool = False
    """Answer each label with its probability (``enableConfidenceScores``)."""
    multilabel: bool = False
    """Answer every label that fits, not only the best (``multilabel``)."""
    instructions: str = ""
    """What the task and its domain are, told to the model before the rest (``instructions``)."""
    scoring: str = "auto"
    """How the label is chosen: one of :data:`LABEL_SCORING`."""

    @property
    def task(self) -> Task:
        """The endpoint task that answers the function."""
        return Task.EMBEDDINGS if self.function == "ai_similarity" else Task.CHAT

    def result_type(self) -> SQLType:
        """The SQL type the function returns."""
        if self.function == "ai_extract":
            found = self.extracted_type()
            return with_confidence(found) if self.confidence else found
        if self.function == "ai_similarity":
            return SQLType("FLOAT")
        if self.function == "ai_filter":
            return SQLType("BOOLEAN")
        label = SQLType.string()
        if self.confidence:
            label = SQLType.struct([("label", label), ("confidence", SQLType("DOUBLE"))])
        return SQLType.array(label) if self.multilabel else label

    def _extracted(self, answer: Any) -> dict[str, Any] | None:
        """ai_extract's fields from the model's JSON object (a string that says "none" is NULL)."""
        if not isinstance(answer, Mapping):
            return None
        return {
            f.name: _present(answer.get(f.name))
            if f.kind in ("string", "enum")
            else answer.get(f.name)
            for f in self.fields
        }

    def extracted_type(self) -> SQLType:
        """ai_extract's fields as a STRUCT (its result, less any confidence)."""
        return SQLType.struct([(f.name, f.sql_type()) for f in self.fields])

    def choices(self) -> tuple[str, ...] | None:
        """The only answers guided decoding may produce, or None."""
        if self.function == "ai_analyze_sentiment":
            return SENTIMENTS
        if self.function == "ai_classify":
            return self.labels
        if self.function == "ai_filter":
            return tuple(FILTER_ANSWERS)
        return None

    def answer_prefix(self) -> str:
        """The words a scored answer starts with, before the label."""
        return "The sentiment is" if self.function == "ai_analyze_sentiment" else "The label is"

    def scored_format(self) -> str:
        """The responseFormat that scores each label and answers with the scores."""
        choices = self.choices()
        assert choices is not None
        return choice_format(
            choices, prefix=self.answer_prefix(), scores=True, generate=self.scoring == "generate"
        )

    def label_texts(self) -> tuple[str, ...]:
        """What each label means, for an embeddings model: the label, with its description."""
        if not self.descriptions:
            return self.choices() or ()
        return tuple(
            f"{label}: {desc}" if desc else label
            for label, desc in zip(self.labels, self.descriptions, strict=True)
        )

    def return_type(self) -> str | None:
        """The returnType DDL of the engine call (structured output), or None for text."""
        return None

    def response_format(self) -> str | None:
        """The responseFormat of the engine call: a guided choice for labels, else None."""
        if self.function == "ai_mask":
            return mask_format(self.labels)
        if self.function == "ai_extract":
            schema = {"name": "extraction", "schema": object_schema(self.fields)}
            return json.dumps(
                {
                    "type": "json_schema",
                    "json_schema": schema,
                    "returnType": self.extracted_type().to_ddl("databricks"),
                    "confidence": self.confidence,
                },
                separators=(",", ":"),
            )
        choices = self.choices()
        return None if choices is None else choice_format(choices)

    def max_tokens(self) -> int | None:
        """A token budget that fits the answer (None: the engine's default)."""
        if self.function == "ai_summarize" and self.max_words:
            return 16 + 2 * self.max_words
        if self.function in ("ai_analyze_sentiment", "ai_classify", "ai_filter"):
            return 16
        if self.function == "ai_mask":  # room for every entity the schema allows
            return 32 + len(self.labels) * MASK_MAX_CHARS
        return None

    def prompt(self, content: str) -> str:
        """The chat prompt for one row's content (after the ``instructions`` option's text)."""
        task = self._task_prompt(content)
        return f"{self.instructions}\n\n{task}" if self.instructions else task

    def _task_prompt(self, content: str) -> str:
        f = self.function
        text = f"\n\nText: {content}"
        if f == "ai_gen":
            return content
        if f == "ai_analyze_sentiment":
            options = "\n".join(f"- {label}: {desc}" for label, desc in SENTIMENT_MEANINGS.items())
            return "Classify the sentiment of the following text as one of:\n" + options + text
        if f == "ai_classify":
            return self._classify_ask() + text + "\n\nLabel:"
        if f in ("ai_extract", "ai_mask"):
            return (
                "Extract these entities from the following text: "
                + ", ".join(self.labels)
                + ". Give each entity exactly as it is written in the text, or an empty string "
                "when the text has none." + text
            )
        if f == "ai_fix_grammar":
            return (
                "Correct the grammar and spelling of the following text. Answer with the "
                "corrected text only." + text
            )
        if f == "ai_summarize":
            limit = f" in at most {self.max_words} words" if self.max_words else ""
            return f"Summarize the following text{limit}. Answer with the summary only." + text
        if f == "ai_translate":
            language = LANGUAGES[self.to_lang or "en"]
            return (
                f"Translate the following text to {language}. Answer with the translation only."
                + text
            )
        raise UnsupportedCallError(f"{f} has no prompt")  # ai_similarity embeds, no prompt

    def _classify_ask(self) -> str:
        """ai_classify's ask: the labels listed, with their descriptions, where the list fits
        :data:`PROMPT_LABEL_CHARS`; else the bare labels; else none (every label is still
        scored, and described to the embeddings scorer)."""
        descriptions = self.descriptions or ("",) * len(self.labels)
        described = "\n".join(
            f"- {label}: {desc}" if desc else f"- {label}"
            for label, desc in zip(self.labels, descriptions, strict=True)
        )
        bare = "\n".join(f"- {label}" for label in self.labels)
        for listed in (described, bare):
            if len(listed) <= PROMPT_LABEL_CHARS:
                return "Classify the following text into exactly one of these labels:\n" + listed
        return "Classify the following text into exactly one label."

    def filter_prompt(self, predicate: str, content: str | None = None) -> str:
        """ai_filter's chat prompt: the predicate, the content when given, a true/false ask."""
        text = "" if content is None else f"\n\nText: {content}"
        return (
            "Decide whether the following statement is true. Answer with one word: true or "
            f"false.\n\nStatement: {predicate}{text}\n\nAnswer:"
        )

    def finish(self, content: str, answer: Any) -> Any:
        """The function's result from the engine's answer (a string, or parsed JSON).

        Raises:
            ValueError: ai_mask's answer is not a JSON object (the caller makes it a row error).
        """
        if self.function == "ai_extract" and isinstance(answer, Mapping):
            if self.confidence:
                return {**answer, "response": self._extracted(answer.get("response"))}
            return self._extracted(answer)
        if self.function == "ai_mask":
            return mask_entities(content, _json_object(answer))
        if self.function == "ai_filter":
            return FILTER_ANSWERS.get(str(answer).strip().lower())
        if isinstance(answer, str):
            answer = answer.strip()
            if self.function == "ai_summarize" and self.max_words:
                answer = " ".join(answer.split()[: self.max_words])
        return answer


def _json_object(answer: Any) -> Mapping[str, Any]:
    if isinstance(answer, Mapping):
        return answer
    try:
        value = json.loads(answer)
    except (TypeError, json.JSONDecodeError) as exc:
        # Masking nothing would leak the entities: the row fails instead.
        raise ValueError(f"ai_mask: the model's entity list is not valid JSON ({exc})") from exc
    if not isinstance(value, Mapping):
        raise ValueError("ai_mask: the model's entity list is not a JSON object")
    return value


def choice_format(
    choices: Sequence[str], *, prefix: str = "", scores: bool = False, generate: bool = False
) -> str:
    """The responseFormat that restricts a chat answer to one of ``choices``: scored where the
    model gives probabilities (as the words after ``prefix``), else (or with ``generate``)
    generated under guided decoding; with ``scores``, the answer is JSON with each choice's
    log-probability."""
    data: dict[str, Any] = {"type": "choice", "choice": list(choices)}
    if generate:
        data["scoring"] = "generate"
    if prefix:
        data["prefix"] = prefix
    if scores:
        data["scores"] = True
    return json.dumps(data, separators=(",", ":"))


def _present(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "null", "none", "n/a") else text


def task_spec(function: str, args: Sequence[Any] = ()) -> TaskSpec:
    """Check a task function call's arguments after the first (Python values).

    Args:
        function: the function's name (any case).
        args: the remaining arguments: labels as a list or JSON text, to_lang, max_words.

    Raises:
        ConfigError: a bad label list, an unsupported language or a bad word limit.
        UnsupportedCallError: an unknown function or the wrong number of arguments.
    """
    name = function.lower()
    params = TASK_FUNCTIONS.get(name)
    if params is None:
        raise UnsupportedCallError(f"unknown task function {function!r}")
    required = sum(not p.endswith("?") for p in params)
    given = 1 + len(args)
    if not required <= given <= len(params):
        counts = str(required) if required == len(params) else f"{required} or {len(params)}"
        names = ", ".join(p.rstrip("?") for p in params)
        raise UnsupportedCallError(f"{name}({names}) takes {counts} arguments, got {given}")
    if name == "ai_similarity":
        return TaskSpec(function=name)
    if name == "ai_extract":
        fields = parse_fields(
            name, _json_value(name, args[0], "the schema must be an ARRAY or JSON text")
        )
        options = parse_options(name, args[1] if len(args) > 1 else None)
        labels = tuple(f.name for f in fields)
        return TaskSpec(function=name, labels=labels, fields=fields, **options)
    if name in ("ai_classify", "ai_mask"):
        labels, descriptions = parse_labels(name, args[0])
        options = parse_options(name, args[1] if len(args) > 1 else None)
        return TaskSpec(function=name, labels=labels, descriptions=descriptions, **options)
    if name == "ai_analyze_sentiment":
        return TaskSpec(function=name, **parse_options(name, args[0] if args else None))
    if name == "ai_translate":
        lang = args[0]
        if not isinstance(lang, str) or lang.strip().lower() not in LANGUAGES:
            raise ConfigError(
                f"ai_translate: unsupported language {lang!r}; supported: {', '.join(LANGUAGES)}"
            )
        return TaskSpec(function=name, to_lang=lang.strip().lower())
    if name == "ai_summarize":
        words = args[0] if args else DEFAULT_MAX_WORDS
        if words is None:
            words = DEFAULT_MAX_WORDS
        if isinstance(words, bool) or not isinstance(words, int) or words < 0:
            raise ConfigError(
                f"ai_summarize: max_words must be a non-negative integer, got {words!r}"
            )
        return TaskSpec(function=name, max_words=words)
    return TaskSpec(function=name)


def _json_value(function: str, value: Any, expected: str) -> Any:
    """A constant argument given as JSON text, parsed; any other value as it is.

    Raises:
        ConfigError: ``{function}: {expected}, got ...`` for text that is not JSON.
    """
    if not isinstance(value, str):
        return value.tolist() if hasattr(value, "tolist") else value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError(f"{function}: {expected}, got {value!r}") from None


def parse_options(function: str, value: Any) -> dict[str, Any]:
    """TaskSpec fields from an options argument: a MAP, a JSON object text, or NULL.

    Raises:
        ConfigError: not a map, an unknown option, or a value of the wrong kind.
    """
    if value is None:
        return {}
    value = _json_value(function, value, "options must be a MAP or a JSON object")
    if isinstance(value, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in value
    ):  # a MAP as Arrow hands it over: (key, value) pairs
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{function}: options must be a MAP or a JSON object, got {value!r}")
    allowed = EXTRACT_OPTIONS if function == "ai_extract" else LABEL_OPTIONS
    known = {k.lower(): k for k in allowed}
    out: dict[str, Any] = {}
    for key, raw in value.items():
        name = known.get(str(key).lower())
        if name is None:
            raise ConfigError(
                f"{function}: unknown option {key!r}; expected one of {', '.join(allowed)}"
            )
        if name in ("enableConfidenceScores", "multilabel"):
            field = "confidence" if name == "enableConfidenceScores" else "multilabel"
            out[field] = _flag(function, name, raw)
        elif name == "instructions":
            out["instructions"] = "" if raw is None else str(raw).strip()
        elif name == "scoring":
            if raw not in LABEL_SCORING:
                raise ConfigError(
                    f"{function}: option scoring must be one of {', '.join(LABEL_SCORING)}, "
                    f"got {raw!r}"
                )
            out["scoring"] = raw
    return out


def _flag(function: str, name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{function}: option {name} must be true or false, got {value!r}")


def parse_labels(function: str, value: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(labels, descriptions) from an ARRAY<STRING> or JSON text (array, or label -> text).

    Raises:
        ConfigError: not a list of distinct non-empty strings, or a count outside the
            function's bounds (ai_classify: 2 to 500).
    """
    descriptions: tuple[str, ...] = ()
    value = _json_value(function, value, "labels must be an ARRAY<STRING> or a JSON array/object")
    if isinstance(value, Mapping):
        descriptions = tuple("" if v is None else str(v) for v in value.values())
        value = list(value.keys())
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise ConfigError(f"{function}: labels must be non-empty strings, got {value!r}")
    labels = tuple(v.strip() for v in value)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{function}: labels must be distinct, got {list(labels)}")
    low, high = (
        (MIN_CLASSIFY_LABELS, MAX_CLASSIFY_LABELS)
        if function == "ai_classify"
        else (1, MAX_EXTRACT_LABELS)
    )
    if not low <= len(labels) <= high:
        raise ConfigError(
            f"{function}: needs {low} to {high} labels, got {len(labels)}: {list(labels)}"
        )
    return labels, descriptions
