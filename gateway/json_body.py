"""The request body as JSON a client may send: parsed, shallow, and valid Unicode.

``json.loads`` accepts what the rest of the gateway cannot carry: ``"\\ud800"`` escapes
decode to lone UTF-16 surrogates, which no UTF-8 encoder takes (a prompt, a stop word or
an error message echoing the model id would fail to encode, deep inside), and thousands
of nested brackets exhaust the interpreter's recursion. ``decode`` refuses both with a
400 naming the place, so no later step meets them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .http_errors import APIError, bad_request

MAX_DEPTH = 32  # nesting of arrays and objects; OpenAI bodies need about 5

_SURROGATE = re.compile("[\ud800-\udfff]")


def decode(raw: bytes) -> Any:
    """Parse ``raw`` as JSON and check its depth and strings.

    Raises:
        APIError: 400 for text that is not JSON (or not UTF-8), nesting deeper than
            ``MAX_DEPTH``, or a string (value or key) holding a lone surrogate.
    """
    try:
        data = json.loads(raw or b"null")
    except RecursionError as exc:
        raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise bad_request(f"the request body is not valid JSON: {_one_line(exc)}") from exc
    check(data)
    return data


def check(data: Any) -> None:
    """Walk ``data`` (iteratively: it may be deep) for depth and lone surrogates.

    Raises:
        APIError: 400 as ``decode`` says.
    """
    if not isinstance(data, str | dict | list):
        return
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
            continue
        if depth >= MAX_DEPTH:
            raise bad_request(
                f"the request body nests deeper than {MAX_DEPTH} levels", where or None
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, where)
            if isinstance(item, str | dict | list):
                stack.append((item, depth + 1, _path(where, key)))


def _check_text(text: str, where: str) -> None:
    match = _SURROGATE.search(text)
    if match is not None:
        raise APIError(
            400,
            f"{where or 'the request body'}: the string holds a lone UTF-16 surrogate "
            f"(\\u{ord(match.group()):04x}) at character {match.start()}, which is not valid "
            "Unicode; send UTF-8 text (pair surrogates in \\u escapes)",
            param=where or None,
        )


def _path(where: str, key: object) -> str:
    path = f"{where}.{key}" if where else str(key)
    return path if len(path) <= 80 else path[:77] + "..."


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
