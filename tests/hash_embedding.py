"""A deterministic bag-of-words embedder for tests that exercise storage, not semantics:
each word adds a fixed pseudo-random direction (from its hash), so texts that share words
are near. Loads in no time, which keeps fault-injection workers cheap to start."""

from __future__ import annotations

import hashlib
import re

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding

DIM = 32


def _word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha1(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM)


class HashEmbedding(BaseEmbedding):
    def __init__(self, **kwargs):
        super().__init__(model_name="test-hash-32", **kwargs)

    def _embed(self, text: str) -> list[float]:
        vector = np.zeros(DIM)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            vector += _word_vector(word)
        return vector.tolist() if vector.any() else [1.0] + [0.0] * (DIM - 1)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)


TOPICS = ["pastry chef croissant dough", "spark etl pipeline airflow", "roadmap backlog product", "tax invoice ledger"]


def text_of(i: int) -> str:
    return f"{TOPICS[i % len(TOPICS)]} document {i} word{i % 17}"
