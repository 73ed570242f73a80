"""The command-line options of an endpoint, defined once for `dermvqa eval --model openai:...` and
`dermvqa data teach --endpoint`: --api-key-env, --timeout, --retries, --max-tokens-param, --no-temperature,
--extra-body.

Each is a typer option whose default is None, so a command can tell a flag given from one left out (eval
refuses endpoint flags on other backends, teach without --endpoint); `scope` starts its help ("openai",
"endpoint") and the command's own default is named in it.
"""
from __future__ import annotations

import json

import typer

from chat_endpoint.protocol import TOKEN_PARAMS, RequestOptions


def api_key_env_option(scope: str):
    return typer.Option(None, "--api-key-env", help=f"{scope}: the environment variable holding the API key (the key "
                                                   "is only sent in the Authorization header, never written)")


def timeout_option(scope: str, default_s: float):
    return typer.Option(None, "--timeout", min=0.001, help=f"{scope}: seconds to wait for each reply (default "
                                                           f"{default_s:g})")


def retries_option(scope: str, default: int):
    return typer.Option(None, "--retries", min=0, help=f"{scope}: tries after the first for 429, 5xx, timeouts and "
                                                       f"unreadable replies, with backoff (default {default})")


def max_tokens_param_option(scope: str, limit_flag: str):
    return typer.Option(None, "--max-tokens-param", help=f"{scope}: {' or '.join(TOKEN_PARAMS)} (OpenAI's "
                                                         f"reasoning models): the field that carries {limit_flag} "
                                                         f"(default {TOKEN_PARAMS[0]})")


def no_temperature_option(scope: str):
    return typer.Option(False, "--no-temperature", help=f"{scope}: send no temperature, for endpoints that accept "
                                                        "only their default (replies are then sampled at it; the "
                                                        "run says so)")


def extra_body_option(scope: str):
    return typer.Option(None, "--extra-body", help=f"{scope}: a JSON object merged into every request, e.g. "
                                                   "'{\"reasoning_effort\": \"low\"}'")


def parse_extra_body(text: str) -> dict:
    """`--extra-body JSON` -> the object whose keys every request carries besides dermvqa's own."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--extra-body {text!r}: not JSON ({e.msg}); expected an object, e.g. "
                         '\'{"reasoning_effort": "low"}\'') from None
    if not isinstance(body, dict):
        raise ValueError(f"--extra-body {text!r}: expected a JSON object, e.g. '{{\"reasoning_effort\": \"low\"}}'")
    return body


def request_options(max_tokens_param: str | None, temperature: float | None, extra_body: str | None
                    ) -> RequestOptions:
    """The RequestOptions the flags give (temperature None: --no-temperature); a bad flag is a ValueError."""
    return RequestOptions(max_tokens_param or TOKEN_PARAMS[0], temperature,
                          parse_extra_body(extra_body) if extra_body else {})
