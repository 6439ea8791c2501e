"""The endpoint catalog, in Databricks' serving-endpoint shape.

A catalog maps endpoint names (and aliases) to :class:`Endpoint` objects. Each endpoint serves
one or more entities: a local model run by vLLM (a bundled model name or a Hugging Face model
directory) or an ``external_model`` reached over an OpenAI-compatible API. Files are YAML or
JSON: a list of endpoints, or ``{"endpoints": [...], "aliases": {alias: endpoint},
"task_functions": {task or function: endpoint}}``; ``task_functions`` picks the endpoint that
answers the task functions, per task (``llm/v1/chat``, ``llm/v1/embeddings``) or per function
(``ai_translate``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ai_query.datafile import read_data_file
from ai_query.errors import ConfigError, UnknownEndpointError
from ai_query.price import EndpointBudget, Price
from ai_query.redaction import remember_secret
from ai_query.tasks import TASKS, Task

#: Bundled model names and the task each serves.
BUNDLED_MODELS: dict[str, Task] = {
    "smollm2-135m-instruct": Task.CHAT,
    "all-minilm-l6-v2": Task.EMBEDDINGS,
}

#: Models built from the bundled ones on first use, for catalog entries to name (no default
#: endpoint): the tiny VLM (:mod:`ai_query.engine.vllm.tiny_vlm`), whose random vision encoder
#: proves the image path; its answers about images mean nothing.
BUILT_MODELS: dict[str, Task] = {"tiny-vlm-smollm2": Task.CHAT}

#: Databricks foundation-model endpoint names that point at the bundled models.
DATABRICKS_ALIASES: dict[str, str] = {
    "databricks-meta-llama-3-3-70b-instruct": "smollm2-135m-instruct",
    "databricks-meta-llama-3-1-8b-instruct": "smollm2-135m-instruct",
    "databricks-gte-large-en": "all-minilm-l6-v2",
    "databricks-bge-large-en": "all-minilm-l6-v2",
}

#: The endpoint that answers the task functions (ai_classify, ai_similarity, ...) per task,
#: unless a catalog's ``task_functions`` says otherwise.
TASK_FUNCTION_DEFAULTS: dict[str, str] = {
    Task.CHAT: "smollm2-135m-instruct",
    Task.EMBEDDINGS: "all-minilm-l6-v2",
}


#: Fields of Databricks' serving-endpoint API with no effect here (no workspace, budgets or
#: cloud scaling), by the model that would hold them: accepted and dropped, so the official
#: clients' bodies validate. Any other unknown field is still an error.
DATABRICKS_IGNORED_FIELDS: dict[str, frozenset[str]] = {
    "Endpoint": frozenset(
        {"ai_gateway", "budget_policy_id", "email_notifications", "telemetry_config"}
    ),
    "EndpointConfig": frozenset({"name"}),
    "ServedEntity": frozenset(
        {
            "burst_scaling_enabled",
            "environment_vars",
            "instance_profile_arn",
            "max_provisioned_concurrency",
            "max_provisioned_throughput",
            "min_provisioned_concurrency",
            "min_provisioned_throughput",
            "provisioned_model_units",
            "scale_to_zero_enabled",
            "workload_size",
            "workload_type",
        }
    ),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored_fields(cls, data: Any) -> Any:
        ignored = DATABRICKS_IGNORED_FIELDS.get(cls.__name__)
        if ignored and isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in ignored}
        return data


class OpenAIConfig(_Strict):
    """Connection settings of an OpenAI-compatible provider."""

    openai_api_base: str | None = None
    """Base URL of the API (``.../v1``)."""
    openai_api_key: str | None = None
    """API key as a ``{{secrets/scope/key}}`` reference."""
    openai_api_key_plaintext: str | None = None
    """API key in plain text (discouraged; Databricks accepts it too)."""
    openai_organization: str | None = None
    """Organisation header, passed through."""

    @field_validator("openai_api_key_plaintext")
    @classmethod
    def _remember_plaintext_key(cls, value: str | None) -> str | None:
        """A plain-text key is a secret of this process from the moment it is read."""
        remember_secret(value)
        return value


class ExternalModel(_Strict):
    """A model served by another provider over an OpenAI-compatible API."""

    name: str
    """Model name at the provider."""
    provider: Literal["openai", "openai-compatible", "custom", "vllm"] = "openai"
    """Provider kind; every one is spoken to with the OpenAI protocol."""
    task: Task
    """What the model does."""
    openai_config: OpenAIConfig = Field(default_factory=OpenAIConfig)
    """Where and how to connect."""
    max_concurrency: int = Field(default=16, ge=1)
    """Most requests in flight to the provider at once."""
    max_retries: int = Field(default=5, ge=0)
    """Retries on 429 and 5xx answers, with backoff honouring Retry-After."""


class ServedEntity(_Strict):
    """One model behind an endpoint."""

    name: str | None = None
    """Served entity name (routes refer to it); defaults to the entity or external model name."""
    entity_name: str | None = None
    """A bundled model name or a path to a Hugging Face model directory."""
    entity_version: str | None = None
    """Accepted for Databricks compatibility; not used."""
    task: Task | None = None
    """Task of a local model; defaults from the bundled model's task, else chat."""
    external_model: ExternalModel | None = None
    """Set for an external model instead of ``entity_name``."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """vLLM engine arguments passed through (e.g. max_model_len, dtype, tensor_parallel_size)."""

    @model_validator(mode="after")
    def _one_source(self) -> ServedEntity:
        if (self.entity_name is None) == (self.external_model is None):
            raise ValueError("a served entity needs exactly one of entity_name or external_model")
        if self.external_model is not None and self.task not in (None, self.external_model.task):
            raise ValueError("task differs from external_model.task")
        return self

    @property
    def served_name(self) -> str:
        """The name routes use for this entity."""
        if self.name:
            return self.name
        if self.external_model is not None:
            return self.external_model.name
        return Path(str(self.entity_name)).name

    @property
    def resolved_task(self) -> Task:
        """The task this entity serves."""
        if self.external_model is not None:
            return self.external_model.task
        if self.task is not None:
            return self.task
        return BUNDLED_MODELS.get(str(self.entity_name), Task.CHAT)


class Route(_Strict):
    """A share of an endpoint's traffic."""

    served_model_name: str | None = None
    """Served entity the route sends to (Databricks also calls it served_entity_name)."""
    served_entity_name: str | None = None
    """Alternative spelling of ``served_model_name``."""
    traffic_percentage: int = Field(ge=0, le=100)
    """Share of requests, in percent."""

    @property
    def target(self) -> str:
        """The served entity name this route points at."""
        return str(self.served_model_name or self.served_entity_name)


class TrafficConfig(_Strict):
    """How requests are split across served entities."""

    routes: list[Route] = Field(default_factory=list)
    """The routes; percentages add up to 100."""


class EndpointConfig(_Strict):
    """The served entities and traffic of an endpoint."""

    served_entities: list[ServedEntity] = Field(min_length=1)
    """Models behind the endpoint (Databricks also accepts served_models)."""
    traffic_config: TrafficConfig | None = None
    """Traffic split; default: everything to the first entity."""
    auto_capture_config: dict[str, Any] | None = None
    """Accepted for Databricks compatibility."""

    @model_validator(mode="before")
    @classmethod
    def _served_models_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "served_models" in data and "served_entities" not in data:
            data = {**data, "served_entities": data["served_models"]}
            del data["served_models"]
        return data

    @model_validator(mode="after")
    def _check(self) -> EndpointConfig:
        names = [e.served_name for e in self.served_entities]
        if len(set(names)) != len(names):
            raise ValueError(f"served entity names must be unique, got {names}")
        tasks = {e.resolved_task for e in self.served_entities}
        if len(tasks) > 1:
            raise ValueError(
                "all served entities of an endpoint must share a task, got "
                f"{sorted(map(str, tasks))}"
            )
        if any(e.external_model for e in self.served_entities) and len(self.served_entities) > 1:
            raise ValueError(
                "an endpoint with an external_model must have exactly one served entity"
            )
        if self.traffic_config and self.traffic_config.routes:
            routes = self.traffic_config.routes
            unknown = [r.target for r in routes if r.target not in names]
            if unknown:
                raise ValueError(
                    f"traffic route names unknown served entities {unknown}; known {names}"
                )
            total = sum(r.traffic_percentage for r in routes)
            if total != 100:
                raise ValueError(f"traffic percentages must add up to 100, got {total}")
        return self


class RateLimit(_Strict):
    """A Databricks rate limit."""

    calls: int | None = Field(default=None, ge=1)
    """Calls allowed per period."""
    tokens: int | None = Field(default=None, ge=1)
    """Tokens allowed per period."""
    key: Literal["user", "endpoint"] = "endpoint"
    """Whether the limit counts per user or for the whole endpoint."""
    renewal_period: Literal["minute"] = "minute"
    """The period (Databricks supports minutes)."""


class Tag(_Strict):
    """A key/value tag."""

    key: str
    """Tag key."""
    value: str | None = None
    """Tag value."""


class Endpoint(_Strict):
    """A serving endpoint."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Endpoint name, as used in ``ai_query('<name>', ...)``."""
    config: EndpointConfig
    """Served entities and traffic."""
    rate_limits: list[RateLimit] = Field(default_factory=list)
    """Request rate limits."""
    tags: list[Tag] = Field(default_factory=list)
    """Tags."""
    description: str | None = None
    """Free text."""
    route_optimized: bool | None = None
    """Accepted for Databricks compatibility (shown, no effect)."""
    price: Price | None = None
    """Price per 1M input and output tokens (ai_query's own field): EXPLAIN's cost estimate."""
    budget: EndpointBudget | None = None
    """What callers may spend through a server per period (ai_query's own field)."""

    @property
    def task(self) -> Task:
        """The task every served entity of this endpoint serves."""
        return self.config.served_entities[0].resolved_task

    def choose_entity(self, rng: random.Random | None = None) -> ServedEntity:
        """Pick the served entity for one request by the traffic percentages."""
        entities = self.config.served_entities
        routes = self.config.traffic_config.routes if self.config.traffic_config else []
        if not routes:
            return entities[0]
        by_name = {e.served_name: e for e in entities}
        weights = [r.traffic_percentage for r in routes]
        route = (rng or random).choices(routes, weights=weights, k=1)[0]
        return by_name[route.target]


def local_endpoint(name: str, entity_name: str, task: str | None = None) -> Endpoint:
    """An endpoint with a single local served entity (bundled name or model directory)."""
    return Endpoint.model_validate(
        {"name": name, "config": {"served_entities": [{"entity_name": entity_name, "task": task}]}}
    )


class Catalog:
    """Endpoints by name, plus aliases; immutable once built."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        aliases: Mapping[str, str] | None = None,
        task_functions: Mapping[str, str] | None = None,
    ):
        self._endpoints: dict[str, Endpoint] = {}
        for ep in endpoints:
            if ep.name in self._endpoints:
                raise ConfigError(f"catalog: endpoint {ep.name!r} is defined twice")
            self._endpoints[ep.name] = ep
        self._aliases = dict(aliases or {})
        for alias, target in self._aliases.items():
            if target not in self._endpoints:
                raise ConfigError(f"catalog: alias {alias!r} points at unknown endpoint {target!r}")
        self._task_functions = dict(task_functions or {})
        for key, target in self._task_functions.items():
            if key not in TASKS and not key.startswith("ai_"):
                raise ConfigError(
                    f"catalog: task_functions key {key!r} must be a task ({', '.join(TASKS)}) "
                    "or a task function name (ai_classify, ...)"
                )
            if target not in self.names():
                raise ConfigError(
                    f"catalog: task_functions[{key!r}] points at unknown endpoint {target!r}"
                )

    @classmethod
    def default(cls) -> Catalog:
        """The bundled endpoints and the Databricks-name aliases."""
        return cls(
            [local_endpoint(n, n, task) for n, task in BUNDLED_MODELS.items()],
            DATABRICKS_ALIASES,
        )

    @classmethod
    def from_data(cls, data: Any, *, source: str = "catalog") -> Catalog:
        """Build from parsed JSON/YAML data.

        Raises:
            ConfigError: naming the offending field (e.g. ``endpoints[0].config.served_entities``).
        """
        if isinstance(data, list):
            data = {"endpoints": data}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a list of endpoints or an object")
        unknown = set(data) - {"endpoints", "aliases", "include_defaults", "task_functions"}
        if unknown:
            raise ConfigError(f"{source}: unknown top-level field(s) {sorted(unknown)}")
        endpoints = []
        for i, raw in enumerate(data.get("endpoints") or []):
            try:
                endpoints.append(Endpoint.model_validate(raw))
            except ValidationError as exc:
                where = f"endpoints[{i}]"
                raise ConfigError(f"{source}: {describe_validation_error(exc, where)}") from exc
        aliases = data.get("aliases") or {}
        if not isinstance(aliases, dict):
            raise ConfigError(f"{source}: aliases must map alias names to endpoint names")
        task_functions = data.get("task_functions") or {}
        if not isinstance(task_functions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in task_functions.items()
        ):
            raise ConfigError(f"{source}: task_functions must map tasks or functions to endpoints")
        if data.get("include_defaults", False):
            base = cls.default()
            names = {e.name for e in endpoints}
            endpoints = [e for e in base.endpoints() if e.name not in names] + endpoints
            aliases = {**base.aliases(), **aliases}
        return cls(endpoints, aliases, task_functions)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Load a catalog file (``.json``, ``.yaml`` or ``.yml``).

        Raises:
            ConfigError: when the file cannot be read, does not parse or is invalid.
        """
        path = Path(path)
        return cls.from_data(read_data_file(path, "catalog"), source=str(path))

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, in definition order."""
        return list(self._endpoints.values())

    def aliases(self) -> dict[str, str]:
        """Alias name -> endpoint name."""
        return dict(self._aliases)

    def names(self) -> list[str]:
        """Every name a call may use: endpoints and aliases."""
        return [*self._endpoints, *self._aliases]

    def get(self, name: str) -> Endpoint:
        """The endpoint called ``name`` (or aliased so).

        Raises:
            UnknownEndpointError: listing the known names.
        """
        target = self._aliases.get(name, name)
        try:
            return self._endpoints[target]
        except KeyError:
            raise UnknownEndpointError(name, self.names()) from None

    def task_of(self, name: str) -> Task:
        """The task of endpoint ``name``; raises UnknownEndpointError when unknown."""
        return self.get(name).task

    def task_functions(self) -> dict[str, str]:
        """Task or function name -> the endpoint that answers task functions for it."""
        return dict(self._task_functions)

    def task_function_endpoint(self, function: str, task: str) -> str:
        """The endpoint that answers task function ``function`` (whose endpoint task is ``task``).

        The catalog's ``task_functions`` entry for the function, else for the task, else the
        bundled default for the task when the catalog has it, else the first endpoint of
        that task.

        Raises:
            ConfigError: when no endpoint of the catalog serves ``task``.
        """
        chosen = self._task_functions.get(function) or self._task_functions.get(task)
        if chosen is not None:
            if self.task_of(chosen) != task:
                raise ConfigError(
                    f"catalog: task_functions sends {function} to {chosen!r}, a "
                    f"{self.task_of(chosen)} endpoint; {function} needs {task}"
                )
            return chosen
        default = TASK_FUNCTION_DEFAULTS.get(task)
        if default in self.names() and self.task_of(default) == task:
            return default
        for endpoint in self._endpoints.values():
            if endpoint.task == task:
                return endpoint.name
        raise ConfigError(
            f"no {task} endpoint answers {function}: add one to the catalog, or name it in "
            "the catalog's task_functions"
        )

    def with_endpoint(self, endpoint: Endpoint) -> Catalog:
        """A copy with ``endpoint`` added or replaced."""
        eps = {**self._endpoints, endpoint.name: endpoint}
        return Catalog(eps.values(), self._aliases, self._task_functions)

    def without_endpoint(self, name: str) -> Catalog:
        """A copy without endpoint ``name`` (and the aliases pointing at it)."""
        self.get(name)
        eps = [e for n, e in self._endpoints.items() if n != name]
        aliases = {a: t for a, t in self._aliases.items() if t != name}
        kept = {e.name for e in eps} | set(aliases)
        functions = {k: t for k, t in self._task_functions.items() if t in kept}
        return Catalog(eps, aliases, functions)

    def to_data(self) -> dict[str, Any]:
        """JSON-able data that :meth:`from_data` reads back."""
        data: dict[str, Any] = {
            "endpoints": [e.model_dump(mode="json", exclude_none=True) for e in self.endpoints()],
            "aliases": self.aliases(),
        }
        if self._task_functions:
            data["task_functions"] = self.task_functions()
        return data


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog at ``path``, else ``AI_QUERY_CATALOG``, else the bundled default."""
    from ai_query.config import settings

    chosen = path or settings().catalog_path
    return Catalog.load(chosen) if chosen else Catalog.default()


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """A one-line account of a pydantic validation error, each problem named by its field path
    (``endpoints[0].config.served_entities[0].task: ...``)."""
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        where = (prefix + loc).lstrip(".") or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
