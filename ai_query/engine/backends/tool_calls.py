"""Function calling that works with any model: forced tool calls by structured output.

OpenAI's ``tool_choice="required"`` and ``tool_choice={"type": "function", ...}`` are served
the way vLLM's own OpenAI server serves them: the output is constrained by guided decoding to
JSON that names a tool and carries arguments fitting its ``parameters`` schema, then turned into
``tool_calls``. That needs no model-specific parser, so it works for every local model (and the
deterministic backend). ``tool_choice="auto"`` needs the model to decide on its own, which only
a model-specific parser can read back (see :mod:`ai_query.engine.vllm.backend`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ai_query.errors import ConfigError


def function_tools(tools: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Function name -> its ``parameters`` JSON schema, for the function tools in ``tools``.

    Raises:
        ConfigError: on a tool that is not ``{"type": "function", "function": {"name": ...}}``.
    """
    found: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not (
            isinstance(fn, dict) and isinstance(fn.get("name"), str)
        ):
            raise ConfigError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}"
            )
        params = fn.get("parameters")
        found[fn["name"]] = params if isinstance(params, dict) and params else {
            "type": "object",
            "properties": {},
        }
    return found


def forced_tool_name(tool_choice: str | dict[str, Any] | None) -> str | None:
    """The function a named ``tool_choice`` forces, else None."""
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
        raise ConfigError("tool_choice must be {'type': 'function', 'function': {'name': ...}}")
    return None


def tool_call_schema(
    tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
) -> dict[str, Any] | None:
    """The JSON schema that forces a tool call, or None when the choice forces none.

    ``required``: an array of ``{"name", "parameters"}`` objects (one or more calls);
    a named function: that function's arguments object.

    Raises:
        ConfigError: when the choice names a function that ``tools`` does not hold.
    """
    if not tools or tool_choice in (None, "none", "auto"):
        return None
    table = function_tools(tools)
    name = forced_tool_name(tool_choice)
    if name is not None:
        if name not in table:
            raise ConfigError(f"tool_choice names function {name!r}, which is not in tools")
        return table[name]
    if tool_choice != "required":
        raise ConfigError(
            f"tool_choice must be none, auto, required or a function, got {tool_choice!r}"
        )
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": [fn]},
                        "parameters": params,
                    },
                    "required": ["name", "parameters"],
                }
                for fn, params in table.items()
            ]
        },
    }


def tool_calls_from_output(
    text: str, tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None
) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` from output generated under :func:`tool_call_schema`.

    Raises:
        ValueError: when the text is not the JSON the schema asked for (cut at max_tokens).
    """
    data = json.loads(text)
    name = forced_tool_name(tool_choice)
    if name is not None:
        return [make_tool_call(name, data)]
    if not isinstance(data, list):
        raise ValueError("expected a JSON array of tool calls")
    return [make_tool_call(str(item["name"]), item.get("parameters", {})) for item in data]


def make_tool_call(name: str, arguments: Any) -> dict[str, Any]:
    """One OpenAI tool call (arguments as a JSON string, as the API sends them)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }
