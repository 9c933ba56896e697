"""Which models the gateway serves: Triton's ready entry models, their clients and chat templates.

Without ``--model-map`` a model is served under its Triton name when Triton reports it
READY and it is an entry model: decoupled, with ``text_input`` in and ``text_output``
out (so ``NAME_decoder`` and the unary twin ``NAME_sync`` are not listed). With a map,
exactly the mapped ids are served, each while its Triton model is READY. The list is
read from Triton and trusted for ``refresh_s`` seconds; an id not in it makes one fresh
read (at most once a second) before the 404.

Every question goes to one healthy replica (``replicas.ReplicaPool.admin_call``).
Which models to ask about: the map's, else the folders of ``--repository``; only with
neither does the gateway read Triton's repository index, the one API it could use that
Triton restricts to an admin key (``--grpc-restricted-protocol=model-repository:...``).
For the named models it asks what any client may: is the model ready, its metadata (the
versions it serves) and its config (entry or not; the chat template).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonkit.client import AsyncLLMClient, ModelNotFound
from tritonkit.client.chat import ChatTemplate
from tritonkit.core.layout import tokenizer_dir

from .http_errors import unknown_model
from .replicas import ReplicaPool

_MIN_REFRESH_S = 1.0  # an unknown id re-reads the index at most this often


@dataclass(frozen=True)
class ServedModel:
    """One model id clients can ask for."""

    id: str  # the name in requests and /v1/models
    triton_model: str  # the Triton entry model it runs on
    version: str  # the newest READY version Triton reports
    created: int  # when this gateway first saw it ready (Unix seconds)

    def card(self) -> dict[str, Any]:
        """The OpenAI model object."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "tritonkit"}


class ModelCatalog:
    """The served models and their chat templates, as the replicas of ``pool`` report them."""

    def __init__(
        self,
        pool: ReplicaPool,
        *,
        model_map: Mapping[str, str] | None = None,
        repository: Path | None = None,
        tokenizers: Mapping[str, Path] | None = None,
        refresh_s: float = 5.0,
    ) -> None:
        """Read the ``tokenizers`` folders now; nothing talks to Triton until the first call.

        Every question goes to one healthy replica of ``pool`` (another one when it cannot
        be reached): the replicas serve the same release.

        Raises:
            UsageError: a tokenizer folder whose files are not JSON or whose template is
                not valid jinja.
        """
        self.pool = pool
        self.model_map = dict(model_map or {})
        self.repository = repository
        self.refresh_s = refresh_s
        self._templates: dict[tuple[str, str], ChatTemplate] = {
            (name, ""): ChatTemplate.from_dir(folder) for name, folder in (tokenizers or {}).items()
        }
        self._models: dict[str, ServedModel] = {}
        self._read_at = float("-inf")
        self._first_seen: dict[str, int] = {}
        self._entry: dict[tuple[str, str], bool] = {}  # (model, version) -> is an entry model
        self._lock = asyncio.Lock()

    async def served(self) -> list[ServedModel]:
        """The models served now, by id.

        Raises:
            APIError: 503 when no Triton replica is up. Timeout: the replica asked is stuck.
        """
        await self._refresh(self.refresh_s)
        return sorted(self._models.values(), key=lambda m: m.id)

    async def get(self, model_id: str) -> ServedModel:
        """The served model ``model_id``.

        Raises:
            APIError: 404 when no such model is served (or it is not ready).
            APIError: 503 when no Triton replica is up. Timeout: the replica asked is stuck.
        """
        await self._refresh(self.refresh_s)
        if model_id not in self._models:
            await self._refresh(_MIN_REFRESH_S)
        if model_id not in self._models:
            raise unknown_model(model_id)
        return self._models[model_id]

    async def chat_template(self, model: ServedModel) -> ChatTemplate:
        """The chat template of ``model``: ``--tokenizer``, else the served version's
        tokenizer folder in ``repository``, else the template in the Triton config, else
        plain.

        Raises:
            UsageError: the tokenizer files or the config's template are broken.
            APIError: 503 when no Triton replica is up. Timeout: the replica asked is stuck.
        """
        for key in ((model.id, ""), (model.triton_model, ""), (model.triton_model, model.version)):
            if key in self._templates:
                return self._templates[key]
        template = None
        if self.repository is not None:
            folder = tokenizer_dir(Path(self.repository) / model.triton_model / model.version)
            if folder.is_dir():
                template = ChatTemplate.from_dir(folder)
        if template is None:
            try:
                config = await self.pool.admin_call(
                    lambda admin: admin.model_config(model.triton_model, model.version)
                )
            except ModelNotFound:  # unloaded since the index was read
                config = {}
            template = ChatTemplate.from_model_config(config, model.triton_model)
        self._templates[(model.triton_model, model.version)] = template
        return template

    # -- reading Triton's index --------------------------------------------------------

    async def _refresh(self, max_age_s: float) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < max_age_s:
                return
            ready, pairs = await self.pool.admin_call(self._read)
            now = int(time.time())
            models = {}
            for model_id, triton in pairs:
                created = self._first_seen.setdefault(model_id, now)
                models[model_id] = ServedModel(model_id, triton, ready[triton], created)
            self._models = models
            self._read_at = time.monotonic()

    async def _read(self, admin: AsyncLLMClient) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The ready versions (``_ready_versions``) and the (id, Triton model) pairs served."""
        ready = await self._ready_versions(admin)
        if self.model_map:
            return ready, [(i, t) for i, t in self.model_map.items() if t in ready]
        ready_items = sorted(ready.items())
        return ready, [(n, n) for n, v in ready_items if await self._is_entry(admin, n, v)]

    async def _ready_versions(self, admin: AsyncLLMClient) -> dict[str, str]:
        """Triton model name -> its newest READY version."""
        names = self._candidates()
        ready: dict[str, str] = {}
        if names is None:
            for info in await admin.models():
                if info.state == "READY" and _newer(info.version, ready.get(info.name)):
                    ready[info.name] = info.version
            return ready
        versions = await asyncio.gather(*(self._ready_version(admin, name) for name in names))
        return {name: v for name, v in zip(names, versions) if v is not None}

    def _candidates(self) -> list[str] | None:
        """The Triton models to ask about; None: all of Triton's repository index."""
        if self.model_map:
            return sorted(set(self.model_map.values()))
        if self.repository is not None:
            folder = Path(self.repository)
            return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] not in "._")
        return None

    async def _ready_version(self, admin: AsyncLLMClient, name: str) -> str | None:
        """The newest version of ``name`` Triton serves; None when it serves none."""
        try:
            if not await admin.is_model_ready(name):
                return None
            versions = (await admin.model_metadata(name)).get("versions") or []
        except ModelNotFound:
            return None
        newest: str | None = None
        for version in versions:
            if await admin.is_model_ready(name, str(version)) and _newer(version, newest):
                newest = str(version)
        return newest

    async def _is_entry(self, admin: AsyncLLMClient, name: str, version: str) -> bool:
        key = (name, version)
        if key not in self._entry:
            try:
                config = await admin.model_config(name, version)
            except ModelNotFound:  # unloaded since the index was read
                return False
            decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled"))
            inputs = {t.get("name") for t in config.get("input", [])}
            outputs = {t.get("name") for t in config.get("output", [])}
            self._entry[key] = decoupled and "text_input" in inputs and "text_output" in outputs
        return self._entry[key]


def _newer(version: str, than: str | None) -> bool:
    if than is None:
        return True
    try:
        return int(version) > int(than)
    except ValueError:
        return version > than
