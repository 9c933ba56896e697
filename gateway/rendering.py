"""Chat templates rendered off the event loop, within a time and an output budget.

``TemplateRenderer.render`` runs the model's template in one of a few worker threads, so
a slow template never stalls the event loop (other requests keep being served), and
bounds it:

* time: ``timeout_s`` per rendering, counted from the request. The template runs in an
  environment whose sandbox hooks (every attribute and item access, call, filter,
  ``range`` step, ``*`` ``**`` ``+``, and every piece of output) check the deadline, so
  a template that runs long stops itself; the request has its 400 at the deadline in
  any case.
* size: ``max_chars`` characters of output, checked at the same hooks on every value
  they see and on the output, so a string over the limit is refused before ``*`` builds
  it and repeated doubling stops at the next step.
* the sandbox's own limits (``range`` over 100 000 items, recursion) and a template that
  fails on the messages become a 400 with a one-line message, as ``ChatTemplate.render``
  gives.

Otherwise it renders exactly as ``ChatTemplate.render`` does (same globals, filters and
extensions; the tests compare both with transformers). What no hook can interrupt is a
single builtin doing a great deal of work in one go (a ``str`` method on a huge input);
prompts are capped before rendering, and a template that does that is the operator's
code. Such a thread finishes in its own time after its request has had the 400; the
pool's size bounds how many there can be.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jinja2
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from tritonkit.client import chat
from tritonkit.client.chat import ChatTemplate
from tritonkit.errors import ChatTemplateError

WORKERS = 4  # renderings at once; the GIL makes more of them no faster
_GRACE_S = 0.5  # past the deadline, the request stops waiting for a template that did not
_TICK_EVERY = 64  # range steps between two looks at the clock
_MAX_POW_BITS = 1 << 16  # ``a ** b`` with a larger integer result is refused

_local = threading.local()  # the budget of the rendering on this thread


class _Budget:
    """One rendering's deadline and output allowance."""

    def __init__(self, timeout_s: float, max_chars: int) -> None:
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self.deadline = time.monotonic() + timeout_s
        self.written = 0
        self.stopped = False  # set by the event loop when it has stopped waiting

    def tick(self) -> None:
        if self.stopped or time.monotonic() > self.deadline:
            raise self.overtime()

    def overtime(self) -> ChatTemplateError:
        return ChatTemplateError(
            f"the model's chat template did not finish rendering the messages within "
            f"{self.timeout_s:g} s"
        )

    def fits(self, value: Any) -> Any:
        if isinstance(value, str | list | tuple) and len(value) > self.max_chars:
            self.too_large()
        return value

    def write(self, piece: str) -> None:
        self.tick()
        self.written += len(piece)
        if self.written > self.max_chars:
            self.too_large()

    def too_large(self) -> None:
        raise ChatTemplateError(
            f"the model's chat template wrote more than {self.max_chars} characters for "
            "the messages"
        )


def _budget() -> _Budget | None:
    return getattr(_local, "budget", None)


def _tick() -> _Budget | None:
    budget = _budget()
    if budget is not None:
        budget.tick()
    return budget


def _fits(budget: _Budget | None, value: Any) -> Any:
    return value if budget is None else budget.fits(value)


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The client's chat-template sandbox, with the budget checked at every hook."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _tick()
        if budget is not None:
            _check_binop(budget, operator, left, right)
        return _fits(budget, super().call_binop(context, operator, left, right))

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _fits(_tick(), super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _fits(_tick(), super().getitem(obj, argument))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _tick()
        if obj is not _range:  # range has its own limit, and its own message
            _check_sizes(budget, args, kwargs)
        return _fits(budget, super().call(context, obj, *args, **kwargs))


def _check_binop(budget: _Budget, operator: str, left: Any, right: Any) -> None:
    """Refuse ``seq * n`` longer than the allowance and ``a ** b`` over 65 536 bits."""
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
            if sized and len(seq) * n > budget.max_chars:
                budget.too_large()
    ints = isinstance(left, int) and isinstance(right, int) and abs(left) > 1
    if operator == "**" and ints and right * math.log2(abs(left)) > _MAX_POW_BITS:
        raise ChatTemplateError(
            f"the model's chat template asked for {left} ** {right}, too large a number"
        )


class _BoundedRange:
    """A ``range`` that checks the clock as a loop goes through it."""

    def __init__(self, rng: range) -> None:
        self._range = rng

    def __iter__(self) -> Iterator[int]:
        budget = _budget()
        for i, value in enumerate(self._range):
            if budget is not None and i % _TICK_EVERY == 0:
                budget.tick()
            yield value

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __contains__(self, value: object) -> bool:
        return value in self._range

    def __reversed__(self) -> Iterator[int]:
        return iter(_BoundedRange(self._range[::-1]))

    def __repr__(self) -> str:
        return repr(self._range)


def _range(*args: int) -> _BoundedRange:
    """The template's ``range``: the sandbox's (OverflowError over 100 000 items), bounded."""
    return _BoundedRange(safe_range(*args))


def _check_sizes(budget: _Budget | None, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse an integer argument larger than the output allowance (``center(10**9)``)."""
    if budget is None:
        return
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and value > budget.max_chars:
            raise ChatTemplateError(
                f"the model's chat template asked for a size of {value}; it may write at "
                f"most {budget.max_chars} characters"
            )


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja's pass_context & co. markers
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = _tick()
        _check_sizes(budget, args, kwargs)
        return _fits(budget, function(*args, **kwargs))

    return bounded


def _environment() -> _BoundedEnvironment:
    # The settings of the client's renderer (chat._environment), so prompts are identical.
    base = chat._environment()
    env = _BoundedEnvironment(
        trim_blocks=base.trim_blocks,
        lstrip_blocks=base.lstrip_blocks,
        extensions=[type(ext) for ext in base.extensions.values()],
    )
    env.filters.update({name: _bounded_filter(f) for name, f in base.filters.items()})
    env.globals.update(base.globals)
    env.globals["range"] = _range
    env.globals.pop("lipsum", None)  # lorem ipsum of any length is no chat template's business
    return env


class TemplateRenderer:
    """Renders chat templates on a small thread pool within ``timeout_s`` and ``max_chars``."""

    def __init__(self, timeout_s: float, max_chars: int, workers: int = WORKERS) -> None:
        self.timeout_s = timeout_s
        self.max_chars = max_chars
        self._env = _environment()
        self._compiled: dict[str, jinja2.Template] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat-template")

    async def render(
        self,
        template: ChatTemplate,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt for ``messages`` (and ``tools``, for templates that take them), as
        ``template.render`` gives it.

        Raises:
            ChatTemplateError: the template refused the messages, failed on them, took
                longer than ``timeout_s`` or wrote more than ``max_chars`` characters.
        """
        budget = _Budget(self.timeout_s, self.max_chars)
        work = asyncio.get_running_loop().run_in_executor(
            self._pool, self._render, budget, template, messages, add_generation_prompt, tools
        )
        try:
            return await asyncio.wait_for(work, self.timeout_s + _GRACE_S)
        except asyncio.TimeoutError:
            budget.stopped = True  # the thread stops at its next hook
            raise budget.overtime() from None

    def close(self) -> None:
        """Stop taking renderings; one still running finishes on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _render(
        self,
        budget: _Budget,
        template: ChatTemplate,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        _local.budget = budget
        try:
            budget.tick()  # it may have waited for a worker past its deadline
            pieces = []
            compiled = self._compile(template.source)
            for piece in compiled.generate(
                messages=[dict(m) for m in messages],
                tools=[dict(t) for t in tools] if tools else None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **template.special_tokens,
            ):
                budget.write(piece)
                pieces.append(piece)
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(
                f"the model's chat template refused the messages: {_one_line(exc)}"
            ) from exc
        except RecursionError as exc:
            raise ChatTemplateError(
                "the model's chat template recursed too deeply on the messages"
            ) from exc
        except MemoryError as exc:
            raise ChatTemplateError("the model's chat template ran out of memory") from exc
        except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
            raise ChatTemplateError(
                f"the model's chat template failed on the messages: {_one_line(exc)}"
            ) from exc
        finally:
            _local.budget = None
        text = "".join(pieces)
        if template.strip_prefix and text.startswith(template.strip_prefix):
            text = text[len(template.strip_prefix) :]
        return text

    def _compile(self, source: str) -> jinja2.Template:
        compiled = self._compiled.get(source)
        if compiled is None:
            try:
                compiled = self._env.from_string(source)
            except jinja2.TemplateSyntaxError as exc:  # ChatTemplate compiled it already
                raise ChatTemplateError(f"the chat template is not valid jinja: {exc}") from exc
            self._compiled[source] = compiled
        return compiled


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
