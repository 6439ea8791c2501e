"""Per-call options of ``ai_query``: model parameters and the call's constant arguments.

These are plain, validated values shared by the SQL layer (which binds them from SQL) and the
engine (which maps them to sampling parameters). Loose inputs (dicts from SQL structs, JSON
strings, Spark Rows) are normalised once here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ai_query.errors import ConfigError

#: The ``modelParameters`` keys ai_query accepts, with the Python types they take.
MODEL_PARAMETER_KEYS: dict[str, tuple[type, ...]] = {
    "max_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "stop": (str, list),
    "seed": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "repetition_penalty": (int, float),
    "reasoning_effort": (str,),
}
#: ``reasoning_effort`` values (OpenAI's and Databricks' reasoning models).
REASONING_EFFORTS: tuple[str, ...] = ("minimal", "low", "medium", "high")


@dataclass(frozen=True, kw_only=True)
class ModelParameters:
    """Sampling parameters of one ai_query call (Databricks ``modelParameters``)."""

    max_tokens: int | None = None
    """Most tokens to generate; None lets the engine use the endpoint's default."""
    temperature: float = 0.0
    """Sampling temperature; 0.0 (the default) is greedy and deterministic."""
    top_p: float | None = None
    """Nucleus sampling probability mass."""
    top_k: int | None = None
    """Sample from the k most likely tokens only."""
    stop: tuple[str, ...] = ()
    """Strings that end generation when produced."""
    seed: int | None = None
    """Random seed for sampling."""
    presence_penalty: float | None = None
    """OpenAI-style presence penalty."""
    frequency_penalty: float | None = None
    """OpenAI-style frequency penalty."""
    repetition_penalty: float | None = None
    """vLLM/Hugging Face repetition penalty: above 1.0 makes tokens already in the prompt or the
    answer less likely (1.0: off). External providers get it as an extra field, as ``top_k``,
    except OpenAI itself (provider ``openai``), which refuses fields it does not know."""
    reasoning_effort: str | None = None
    """How hard a reasoning model thinks (:data:`REASONING_EFFORTS`): external providers get
    it as OpenAI's ``reasoning_effort``; a local model's chat template reads it (as vLLM's
    server passes it); models that do not reason ignore it."""

    @classmethod
    def from_value(cls, value: Any) -> ModelParameters:
        """Build from a mapping, a JSON object string, None, or an existing instance.

        Raises:
            ConfigError: on an unknown key or a value of the wrong type or range.
        """
        if value is None:
            return cls()
        if isinstance(value, ModelParameters):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ConfigError(f"modelParameters is not a JSON object: {exc}") from exc
        if hasattr(value, "asDict"):  # a Spark Row from named_struct(...)
            value = value.asDict(recursive=True)
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"modelParameters must be a struct/map of parameters, got {type(value).__name__}"
            )
        clean: dict[str, Any] = {}
        for raw_key, raw in value.items():
            key = str(raw_key).lower()
            if key not in MODEL_PARAMETER_KEYS:
                raise ConfigError(
                    f"unknown modelParameters key {raw_key!r}; "
                    f"allowed: {', '.join(MODEL_PARAMETER_KEYS)}"
                )
            if raw is None:
                continue
            clean[key] = _check_value(key, raw)
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        """The parameters that differ from the defaults, as a JSON-able dict."""
        default = ModelParameters()
        out = {}
        for key, val in asdict(self).items():
            if val != getattr(default, key):
                out[key] = list(val) if isinstance(val, tuple) else val
        return out

    @property
    def deterministic(self) -> bool:
        """True when the same request always gives the same answer (greedy decoding)."""
        return self.temperature == 0.0


def _check_value(key: str, raw: Any) -> Any:
    allowed = MODEL_PARAMETER_KEYS[key]
    if isinstance(raw, bool) or not isinstance(raw, allowed):
        # Whole floats from SQL (e.g. 100.0 through a DOUBLE struct field) are fine for ints.
        if int in allowed and isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        elif key == "stop" and hasattr(raw, "tolist"):
            raw = list(raw.tolist())
        else:
            names = "/".join(t.__name__ for t in allowed)
            raise ConfigError(f"modelParameters.{key} must be {names}, got {raw!r}")
    if key == "stop":
        stops = (raw,) if isinstance(raw, str) else tuple(str(s) for s in raw)
        return stops
    if key == "reasoning_effort" and raw not in REASONING_EFFORTS:
        raise ConfigError(
            f"modelParameters.reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}, "
            f"got {raw!r}"
        )
    if key == "max_tokens" and raw < 1:
        raise ConfigError(f"modelParameters.max_tokens must be >= 1, got {raw}")
    if key == "temperature" and not (0.0 <= float(raw) <= 2.0):
        raise ConfigError(f"modelParameters.temperature must be in [0, 2], got {raw}")
    if key == "top_p" and not (0.0 < float(raw) <= 1.0):
        raise ConfigError(f"modelParameters.top_p must be in (0, 1], got {raw}")
    if key == "repetition_penalty" and not (0.0 < float(raw) <= 2.0):
        raise ConfigError(f"modelParameters.repetition_penalty must be in (0, 2], got {raw}")
    if key == "top_k" and raw < -1:
        raise ConfigError(f"modelParameters.top_k must be >= -1, got {raw}")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise ConfigError(f"modelParameters.{key} must be finite, got {raw}")
    return float(raw) if float in allowed else raw


@dataclass(frozen=True, kw_only=True)
class CallOptions:
    """The constant arguments of one ``ai_query(...)`` call, as sent with every batch."""

    endpoint: str
    """Name of the serving endpoint in the catalog."""
    model_parameters: ModelParameters = field(default_factory=ModelParameters)
    """Sampling parameters."""
    return_type: str | None = None
    """``returnType`` DDL string (e.g. ``STRUCT<label: STRING>``), or None for the default."""
    response_format: str | None = None
    """``responseFormat``: 'text', 'json_object', a json_schema JSON string or DDL, or None."""
    fail_on_error: bool = True
    """True: the first failed row fails the query; False: errors are returned per row."""

    def to_json(self) -> str:
        """Serialise to a compact JSON string (batch metadata, cache keys)."""
        return json.dumps(
            {
                "endpoint": self.endpoint,
                "modelParameters": self.model_parameters.to_dict(),
                "returnType": self.return_type,
                "responseFormat": self.response_format,
                "failOnError": self.fail_on_error,
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CallOptions:
        """Inverse of :meth:`to_json`.

        Raises:
            ConfigError: when the text is not a valid options object.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"call options are not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("endpoint"), str):
            raise ConfigError("call options must be a JSON object with an 'endpoint' string")
        return cls(
            endpoint=data["endpoint"],
            model_parameters=ModelParameters.from_value(data.get("modelParameters")),
            return_type=data.get("returnType"),
            response_format=data.get("responseFormat"),
            fail_on_error=bool(data.get("failOnError", True)),
        )
