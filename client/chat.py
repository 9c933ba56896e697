"""Chat messages -> one prompt string, through the model's own chat template.

The template is rendered on the calling side (the client, the CLI, the gateway) with
jinja2 in a sandbox, the way
``transformers``' ``apply_chat_template(..., tokenize=False)`` renders it (same globals:
``raise_exception``, ``strftime_now``, a ``tojson`` that keeps non-ASCII; the special
tokens of ``tokenizer_config.json`` as variables), without importing transformers.
The template comes from a tokenizer folder: ``chat_template.jinja``, else the
``chat_template`` of ``tokenizer_config.json``; or from the served entry model's config
parameter ``chat_template`` (``to_config``/``from_config``), written by ``repo build``
from the same folder, so a client with nothing but the server's address renders it.
A model without one gets ``PLAIN_TEMPLATE``::

    system: You are terse.
    user: Hello
    assistant:

The entry model tokenizes the prompt with the tokenizer's post-processor, which for
Llama-style tokenizers prepends BOS; a template that writes BOS itself would then give
two, so ``render`` drops a leading BOS the post-processor will add again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tritonkit.errors import ChatTemplateError, UsageError

PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
TEMPLATE_FILE = "chat_template.jinja"
CONFIG_FILE = "tokenizer_config.json"


CONFIG_PARAMETER = "chat_template"  # the entry model's config parameter holding to_config()


class ChatTemplate:
    """A compiled chat template with the special tokens it may refer to."""

    def __init__(
        self,
        source: str,
        special_tokens: Mapping[str, str] | None = None,
        strip_prefix: str = "",
        origin: str = "plain template",
    ) -> None:
        """Compile ``source``.

        Raises:
            UsageError: the template is not valid jinja.
        """
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.strip_prefix = strip_prefix  # text the tokenizer prepends itself (its BOS)
        self.origin = origin
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise UsageError(f"the chat template of {origin} is not valid jinja: {exc}") from exc

    @classmethod
    def plain(cls) -> ChatTemplate:
        """The documented fallback: ``role: content`` lines, then ``assistant:``."""
        return cls(PLAIN_TEMPLATE)

    @classmethod
    def from_dir(cls, folder: str | Path) -> ChatTemplate:
        """Read the template of the tokenizer in ``folder``; ``plain()`` when it has none.

        Raises:
            UsageError: ``tokenizer_config.json`` or ``tokenizer.json`` is not JSON, or the
                template is not valid jinja.
        """
        folder = Path(folder)
        config = _read_json(folder / CONFIG_FILE)
        source: str | None = None
        if (folder / TEMPLATE_FILE).is_file():
            source = (folder / TEMPLATE_FILE).read_text()
        else:
            source = _config_template(config.get("chat_template"))
        if source is None:
            return cls.plain()
        tokens = {
            key: _token_text(value)
            for key, value in config.items()
            if key.endswith("_token") and _token_text(value) is not None
        }
        prefix = _post_processor_prefix(_read_json(folder / "tokenizer.json"))
        bos = tokens.get("bos_token")
        return cls(
            source,
            special_tokens={k: v for k, v in tokens.items() if v is not None},
            strip_prefix=bos if bos and prefix.startswith(bos) else "",
            origin=str(folder),
        )

    def to_config(self) -> str:
        """The template as the JSON string the entry model's config parameter holds."""
        return json.dumps(
            {
                "template": self.source,
                "special_tokens": self.special_tokens,
                "strip_prefix": self.strip_prefix,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_config(cls, text: str, origin: str = "the model's config") -> ChatTemplate:
        """The inverse of ``to_config``.

        Raises:
            UsageError: ``text`` is not the JSON ``to_config`` writes, or the template is
                not valid jinja.
        """
        try:
            obj = json.loads(text)
            source = obj["template"]
            tokens = {str(k): str(v) for k, v in dict(obj.get("special_tokens") or {}).items()}
            prefix = str(obj.get("strip_prefix") or "")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"the chat template in {origin} is malformed: {exc}") from exc
        if not isinstance(source, str):
            raise UsageError(f"the chat template in {origin} is not a string")
        return cls(source, special_tokens=tokens, strip_prefix=prefix, origin=origin)

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], model: str) -> ChatTemplate:
        """The template in a served entry model's config; ``plain()`` when it has none.

        Raises:
            UsageError: the parameter is malformed.
        """
        parameter = dict(config.get("parameters") or {}).get(CONFIG_PARAMETER) or {}
        text = parameter.get("string_value") if isinstance(parameter, dict) else None
        if not text:
            return cls.plain()
        return cls.from_config(text, origin=f"the config of model {model!r}")

    @property
    def is_plain(self) -> bool:
        """Whether this is the fallback template (the model has none of its own)."""
        return self.source == PLAIN_TEMPLATE

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt for ``messages`` (dicts with ``role`` and ``content``) and ``tools``
        (OpenAI's function specs, for templates that render them).

        Raises:
            ChatTemplateError: the template raised (for example roles that do not
                alternate) or could not render these messages.
        """
        try:
            text = self._template.render(
                messages=[dict(m) for m in messages],
                tools=[dict(t) for t in tools] if tools else None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(
                f"the model's chat template refused the messages: {exc}"
            ) from exc
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise ChatTemplateError(
                f"the model's chat template failed on the messages: {exc}"
            ) from exc
        if self.strip_prefix and text.startswith(self.strip_prefix):
            text = text[len(self.strip_prefix) :]
        return text

    def __repr__(self) -> str:
        return f"ChatTemplate({self.origin!r})"


# ---------------------------------------------------------------------------- helpers


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant mask): its body."""

    tags = {"generation"}  # noqa: RUF012 (jinja's own attribute)

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return str(caller())


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore attributes (no path to Python internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


def _check_name(name: object) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja's own tojson escapes HTML; templates expect plain JSON.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    return obj if isinstance(obj, dict) else {}


def _config_template(value: Any) -> str | None:
    """``chat_template`` of tokenizer_config.json: a string, or named templates (take "default")."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        template = named.get("default")
        return template if isinstance(template, str) else None
    return None


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or ``{"content": ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _post_processor_prefix(tokenizer: Mapping[str, Any]) -> str:
    """The special tokens the post-processor puts before a single sequence ("" for none)."""
    processor = tokenizer.get("post_processor") or {}
    steps = processor.get("processors", []) if processor.get("type") == "Sequence" else [processor]
    for step in steps:
        if not isinstance(step, dict) or step.get("type") != "TemplateProcessing":
            continue
        prefix = []
        for piece in step.get("single", []):
            if "Sequence" in piece:
                break
            token = piece.get("SpecialToken", {}).get("id")
            if isinstance(token, str):
                prefix.append(token)
        return "".join(prefix)
    return ""
