"""The in-process engine: request batches in, result batches out, models run by backends.

:class:`LocalEngine` resolves each call against the catalog once (unknown endpoint, bad
parameters and bad return types fail here, before any row runs), then submits every row of the
batch to the backend at once on the process's engine loop (an embeddings call as one
``embed_many``). Identical greedy requests that are in flight together (within a batch or
across concurrent batches) run once, and so do repeats of recent greedy requests (a bounded
memo, :mod:`~ai_query.engine.core.memo`); a row with a file is identified by its text and the
file's digest. A row's file is checked before any call (:mod:`~ai_query.engine.core.files`).
A row that fails becomes a row error in place; nothing shifts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ai_query.catalog import Catalog, Endpoint, ServedEntity
from ai_query.engine.backends.backend import Backend, Completion, GenerationRequest, RowFailure
from ai_query.engine.backends.field_confidence import field_confidences
from ai_query.engine.backends.registry import BackendFactory, existing_backend, shared_backend
from ai_query.engine.backends.structured import explain_unparsed
from ai_query.engine.core.arrow_types import coerce, to_arrow
from ai_query.engine.core.batch import (
    RowOutcome,
    read_request_batch,
    read_request_files,
    result_batch,
)
from ai_query.engine.core.ceiling import default_max_tokens
from ai_query.engine.core.files import check_image
from ai_query.engine.core.loop import EngineLoop, settle, shared_loop, spawn
from ai_query.engine.core.memo import ResultMemo, RowKey, row_key, row_keys
from ai_query.engine.core.preview import counts_tokens, estimate_tokens, preview_batch
from ai_query.engine.process.supervision import EngineHealth, EngineState, worst_health
from ai_query.errors import EngineError
from ai_query.options import CallOptions
from ai_query.redaction import redact_exception
from ai_query.sql.response_format import OutputSpec, resolve_output
from ai_query.tasks import Task
from ai_query.text import one_line


@dataclass(frozen=True)
class CallPlan:
    """A call resolved against the catalog: what to run and what type comes back."""

    options: CallOptions
    """The call's options as given."""
    endpoint: Endpoint
    """The endpoint the call names."""
    output: OutputSpec
    """Result SQL type and structured-output constraints."""
    arrow_type: pa.DataType
    """Arrow type of the ``result`` column."""
    generation: GenerationRequest | None
    """For chat/completions: what to generate; None for embeddings."""

    @property
    def coalesce_key(self) -> str | None:
        """Key under which identical requests share one model call; None when sampling
        (embeddings never sample)."""
        if self.generation is not None and not self.options.model_parameters.deterministic:
            return None
        return self.options.to_json()


class LocalEngine:
    """Runs request batches on the catalog's models inside this process.

    Thread-safe: any number of threads may call :meth:`run` at once; their rows are in flight
    together on one event loop.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        backend_factory: BackendFactory | None = None,
        loop: EngineLoop | None = None,
        memo_entries: int = 20_000,
    ) -> None:
        self.catalog = catalog or Catalog.default()
        self._factory = backend_factory
        self._loop = loop
        self._inflight: dict[tuple[str, RowKey], asyncio.Future[RowOutcome]] = {}
        self._memo = ResultMemo(memo_entries)
        self.model_calls = 0
        """Rows that reached a backend (duplicates coalesced away are not counted)."""

    @property
    def loop(self) -> EngineLoop:
        """The event loop the backends run on."""
        if self._loop is None:
            self._loop = shared_loop()
        return self._loop

    @property
    def backend_factory(self) -> BackendFactory | None:
        """What builds this engine's backends (None: vLLM for local models, else external)."""
        return self._factory

    def plan(self, options: CallOptions) -> CallPlan:
        """Resolve a call; raises ConfigError/UnknownEndpointError before any row runs."""
        endpoint = self.catalog.get(options.endpoint)
        output = resolve_output(options.return_type, options.response_format, endpoint.task)
        generation = None
        if endpoint.task != Task.EMBEDDINGS:
            generation = GenerationRequest(
                task=endpoint.task,
                params=options.model_parameters,
                json_schema=output.json_schema,
                json_object=output.json_object,
                choice=output.choice,
                answer_prefix=output.prefix,
                token_logprobs=bool(output.confidence),
                schema_hint=True,
                default_max_tokens=default_max_tokens(output),
            )
        return CallPlan(options, endpoint, output, to_arrow(output.sql_type), generation)

    def run(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Answer a request batch (see :mod:`ai_query.engine.core.batch`); errors leave redacted."""
        try:
            requests, options = read_request_batch(batch)
            plan = self.plan(options)
            outcomes = self.loop.run(self.run_rows(requests, plan, read_request_files(batch)))
        except Exception as exc:
            redact_exception(exc)
            raise
        return result_batch(outcomes, plan.arrow_type)

    def preview(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """What answering ``batch`` would take, with no model call (see
        :mod:`~ai_query.engine.core.preview`): each row's prompt tokens from the model's own
        tokenizer (estimated for a provider without one here), and whether the memo of recent
        greedy answers holds it. A traffic split is counted on its first served entity."""
        try:
            requests, options = read_request_batch(batch)
            plan = self.plan(options)
            rows = row_keys(requests, read_request_files(batch))
            distinct = list(dict.fromkeys(r for r in requests if r is not None))
            entity = plan.endpoint.config.served_entities[0]
            counting = counts_tokens(batch)
            counted, remembered = self.loop.run(
                self._preview_rows(distinct, rows, plan, entity, counting)
            )
        except Exception as exc:
            redact_exception(exc)
            raise
        exact = counted is not None
        if not counting:
            tokens: dict[str, int | None] = dict.fromkeys(distinct)
        else:
            tokens = dict(zip(distinct, counted or map(estimate_tokens, distinct), strict=True))
        return preview_batch(
            [None if r is None else tokens[r] for r in requests],
            exact=exact,
            cached=[r is not None and r in remembered for r in rows],
        )

    async def _preview_rows(
        self,
        texts: list[str],
        rows: list[RowKey | None],
        plan: CallPlan,
        entity: ServedEntity,
        counting: bool,
    ) -> tuple[list[int] | None, set[RowKey]]:
        """Token counts of ``texts`` (None without a tokenizer, or when not ``counting``; a
        row's image is not counted), and the ``rows`` the memo holds."""
        counted = None
        if counting:
            counted = await self._backend(entity).count_tokens(texts, plan.generation)
        key = plan.coalesce_key
        distinct = {r for r in rows if r is not None}
        remembered = set() if key is None else {r for r in distinct if self._memo.holds((key, r))}
        return counted, remembered

    async def run_async(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """:meth:`run` for callers on another event loop (e.g. the HTTP server)."""
        try:
            requests, options = read_request_batch(batch)
            plan = self.plan(options)
            future = self.loop.submit(self.run_rows(requests, plan, read_request_files(batch)))
            outcomes = await asyncio.wrap_future(future)
        except Exception as exc:
            redact_exception(exc)
            raise
        return result_batch(outcomes, plan.arrow_type)

    async def run_rows(
        self,
        requests: Sequence[str | None],
        plan: CallPlan,
        files: Sequence[bytes | None] | None = None,
    ) -> list[RowOutcome | None]:
        """Answer every request at once (on the engine loop); None for a NULL request.

        Chat rows go to the backend one request each (its scheduler batches them), with their
        file where ``files`` gives one; the texts of an embeddings call go in one
        ``embed_many`` call.
        """
        futures: list[asyncio.Future[RowOutcome] | None] = []
        claimed: dict[RowKey, asyncio.Future[RowOutcome]] = {}
        to_run: list[tuple[str, bytes | None, asyncio.Future[RowOutcome]]] = []
        refusals: list[RowOutcome | None] = []
        if files is not None:  # decoding images off the loop, which keeps feeding the model
            refusals = await asyncio.to_thread(
                lambda: [None if d is None else _refused_file(d, plan) for d in files]
            )
        for i, text in enumerate(requests):
            if text is None:
                futures.append(None)
                continue
            data = files[i] if files is not None else None
            refused = refusals[i] if files is not None else None
            if refused is not None:
                futures.append(_done(refused))
                continue
            row = row_key(text, data)
            fut = claimed.get(row) if plan.coalesce_key is not None else None
            if fut is None:
                fut, new = self._claim(row, plan)
                claimed[row] = fut
                if new:
                    to_run.append((text, data, fut))
            futures.append(fut)
        if plan.generation is None:
            if to_run:
                spawn(self._embed([(text, fut) for text, _, fut in to_run], plan))
        else:
            for text, data, fut in to_run:
                spawn(self._complete(text, plan, fut, data))
        pending = {f for f in futures if f is not None}
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for fut in pending:
            exc = fut.exception()
            if exc is not None:
                raise exc
        return [None if f is None else f.result() for f in futures]

    def _claim(self, row: RowKey, plan: CallPlan) -> tuple[asyncio.Future[RowOutcome], bool]:
        """The future answer for ``row``: one in flight, remembered, or a new one (True) that
        the caller must run."""
        loop = asyncio.get_running_loop()
        key = plan.coalesce_key
        if key is not None:
            found = self._inflight.get((key, row))
            if found is not None:
                return found, False
            remembered = self._memo.get((key, row))
            if remembered is not None:
                return _done(dataclasses.replace(remembered, cached=True)), False
        fut: asyncio.Future[RowOutcome] = loop.create_future()
        if key is not None:
            self._inflight[(key, row)] = fut
            fut.add_done_callback(lambda f: self._finished(key, row, f))
        return fut, True

    def _finished(self, key: str, row: RowKey, fut: asyncio.Future[RowOutcome]) -> None:
        self._inflight.pop((key, row), None)
        if not fut.cancelled() and fut.exception() is None:
            self._memo.put((key, row), fut.result())

    async def _complete(
        self, text: str, plan: CallPlan, fut: asyncio.Future[RowOutcome], data: bytes | None
    ) -> None:
        """Generate for one row (with its file, if any) into ``fut``."""
        assert plan.generation is not None
        backend = self._backend_or_fail(plan, [fut])
        if backend is None:
            return
        self.model_calls += 1
        generation = plan.generation
        if data is not None:
            generation = dataclasses.replace(generation, files=(data,))
        try:
            if plan.output.choice is not None:
                outcome = await self._choose(backend, text, plan, generation)
            else:
                done = await backend.complete(text, generation)
                outcome = RowOutcome(
                    done.text,
                    prompt_tokens=done.prompt_tokens,
                    completion_tokens=done.completion_tokens,
                    reasoning_tokens=done.reasoning_tokens,
                )
                if plan.output.parse_json:
                    outcome.value, outcome.error = _parse_structured(done, plan)
        except EngineError as exc:
            settle(fut, exc)
            return
        except Exception as exc:  # noqa: BLE001 - any other failure is this row's error
            settle(fut, RowOutcome(error=str(exc) or type(exc).__name__))
            return
        settle(fut, outcome)

    async def _choose(
        self, backend: Backend, text: str, plan: CallPlan, generation: GenerationRequest
    ) -> RowOutcome:
        """One of the call's choices: the most probable one where the backend scores them
        (``scoring`` ``logprobs``; not with images, which scoring does not read), else the
        one generated under the choice."""
        assert plan.output.choice is not None
        scored = None
        if plan.output.scoring == "logprobs" and not generation.files:
            scored = await backend.score_choices(text, generation)
        if scored is None:
            done = await backend.complete(text, generation)
            label, logprobs = done.text, None
            tokens = (done.prompt_tokens, done.completion_tokens)
        else:
            label, logprobs = plan.output.choice[scored.best], scored.logprobs
            tokens = (scored.prompt_tokens, 0)
        value = json.dumps({"label": label, "logprobs": logprobs}) if plan.output.scores else label
        return RowOutcome(value, prompt_tokens=tokens[0], completion_tokens=tokens[1])

    async def _embed(
        self, rows: list[tuple[str, asyncio.Future[RowOutcome]]], plan: CallPlan
    ) -> None:
        """Embed the texts of one call with one backend call (a traffic split picks the served
        entity per call)."""
        backend = self._backend_or_fail(plan, [fut for _, fut in rows])
        if backend is None:
            return
        self.model_calls += len(rows)
        try:
            results = await backend.embed_many([text for text, _ in rows])
        except EngineError as exc:
            for _, fut in rows:
                settle(fut, exc)
            return
        except Exception as exc:  # noqa: BLE001 - the call's failure is each row's error
            results = [RowFailure(str(exc) or type(exc).__name__)] * len(rows)
        for (_, fut), result in zip(rows, results, strict=True):
            if isinstance(result, RowFailure):
                settle(fut, RowOutcome(error=str(result) or "the row failed"))
            else:
                settle(fut, RowOutcome(result.vector, prompt_tokens=result.prompt_tokens))

    def _backend(self, entity: ServedEntity) -> Backend:
        return shared_backend(entity, self._factory)

    def _backend_or_fail(
        self, plan: CallPlan, futs: list[asyncio.Future[RowOutcome]]
    ) -> Backend | None:
        """The backend of the served entity this call goes to; None, with ``futs`` settled with
        the batch's error, when its model cannot be made (a catalog error, e.g. no such model)."""
        try:
            return self._backend(plan.endpoint.choose_entity())
        except Exception as exc:  # noqa: BLE001 - given to the batch, which reports it
            for fut in futs:
                settle(fut, exc)
            return None

    def endpoint_health(self) -> dict[str, EngineHealth]:
        """Each endpoint's health: the least ready of its served entities' engines.

        An engine not built yet counts as ``NOT_STARTED`` (it starts with the first request).
        """
        out: dict[str, EngineHealth] = {}
        for endpoint in self.catalog.endpoints():
            healths = [
                backend.health() if backend is not None else EngineHealth(EngineState.NOT_STARTED)
                for backend in (
                    existing_backend(e, self._factory) for e in endpoint.config.served_entities
                )
            ]
            out[endpoint.name] = worst_health(healths)
        return out

    def close(self) -> None:
        """Nothing to release per engine: backends are shared by the process (see registry)."""


def _refused_file(data: bytes, plan: CallPlan) -> RowOutcome | None:
    """The row error for a file that cannot be sent under ``plan`` (checked before any call),
    or None when it can."""
    if plan.generation is None:
        return RowOutcome(
            error=f"endpoint {plan.endpoint.name!r} embeds text: it takes no files"
        )
    if plan.generation.task != Task.CHAT:
        return RowOutcome(
            error=f"endpoint {plan.endpoint.name!r} completes raw prompts: images go to chat "
            "endpoints"
        )
    try:
        check_image(data)
    except RowFailure as exc:
        return RowOutcome(error=str(exc))
    return None


def _done(outcome: RowOutcome) -> asyncio.Future[RowOutcome]:
    """A future already holding ``outcome``."""
    fut: asyncio.Future[RowOutcome] = asyncio.get_running_loop().create_future()
    fut.set_result(outcome)
    return fut


def _parse_structured(done: Completion, plan: CallPlan) -> tuple[Any, str | None]:
    """The answer parsed and coerced to the call's SQL type, or (None, why not, in one line);
    with its fields' confidences where the call asks for them."""
    ddl = plan.output.sql_type.to_ddl("databricks")
    try:
        data = json.loads(done.text)
    except ValueError as exc:
        why = explain_unparsed(done.text, done.finish_reason, one_line(exc))
        return None, f"could not parse the model's answer as {ddl}: {why}"
    if plan.output.confidence:
        scores = field_confidences(done.text, plan.output.confidence, done.token_logprobs)
        data = {"response": data, "confidence": scores}
    try:
        return coerce(data, plan.output.sql_type), None
    except (ValueError, TypeError) as exc:
        return None, f"could not parse the model's answer as {ddl}: {one_line(exc)}"
