"""Embeddings cached on disk per (dataset, model), so a second evaluation run skips the model."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr


def _digest(kind: str, text: str) -> str:
    return hashlib.sha1(f"{kind}\x1f{text}".encode()).hexdigest()


class CachedEmbedding(BaseEmbedding):
    """Wraps an embedder; texts it has seen come from ``<cache_dir>/<model>.npz``.
    Keeps the inner model's name, so an index built through it is the inner model's index."""

    _inner: BaseEmbedding = PrivateAttr()
    _path: Path = PrivateAttr()
    _vectors: dict[str, list[float]] = PrivateAttr(default_factory=dict)
    _dirty: bool = PrivateAttr(default=False)

    def __init__(self, inner: BaseEmbedding, cache_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(model_name=inner.model_name, embed_batch_size=inner.embed_batch_size, **kwargs)
        self._inner = inner
        self._path = Path(cache_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', inner.model_name)}.npz"
        if self._path.is_file():
            stored = np.load(self._path)
            self._vectors = dict(zip(stored["keys"].tolist(), stored["vectors"].tolist(), strict=False))

    def _lookup(
        self, kind: str, texts: list[str], compute: Callable[[list[str]], Sequence[Sequence[float]]]
    ) -> list[list[float]]:
        keys = [_digest(kind, t) for t in texts]
        missing = [t for t, k in zip(texts, keys, strict=False) if k not in self._vectors]
        if missing:
            for text, vector in zip(missing, compute(missing), strict=False):
                self._vectors[_digest(kind, text)] = list(vector)
            self._dirty = True
        return [self._vectors[k] for k in keys]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._lookup("passage", texts, self._inner.get_text_embedding_batch)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._lookup("query", [query], lambda qs: [self._inner.get_query_embedding(q) for q in qs])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    @property
    def inner(self) -> BaseEmbedding:
        """The wrapped model, bypassing the cache (for timing it)."""
        return self._inner

    def save(self) -> None:
        if not self._dirty:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._vectors)
        np.savez(self._path, keys=np.asarray(keys), vectors=np.asarray([self._vectors[k] for k in keys], dtype=np.float32))
        self._dirty = False
