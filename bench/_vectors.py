"""What the vector benchmarks share: synthetic vectors grown from real embeddings, timing,
recall against exact search, and filling a Chroma collection."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from llama_index.core.schema import TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

CISI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"
NOISE = 1.5
PROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def sample_between(anchors: np.ndarray, n: int, noise: float, rng: np.random.Generator, neighbours: int = 20) -> np.ndarray:
    """Synthetic embeddings on the real ones' manifold: each is a random convex mix of a real
    embedding and two of its 20 nearest real neighbours, plus Gaussian noise, re-normalised.
    Noise around single embeddings alone makes near-duplicate groups that one cluster holds
    whole; with NOISE the exact top-10 of a 100k query spans about 5 clusters, as it does on
    the real CISI embeddings themselves."""
    return grow_from(anchors, n, noise, rng, neighbours)[0]


def grow_from(
    anchors: np.ndarray, n: int, noise: float, rng: np.random.Generator, neighbours: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """``sample_between``'s vectors, and the anchor each was grown from (whose text it can carry)."""
    nearest = np.argsort(-(anchors @ anchors.T), axis=1)[:, 1 : neighbours + 1]
    first = rng.integers(0, len(anchors), n)
    others = nearest[first[:, None], rng.integers(0, neighbours, (n, 2))]
    weights = rng.dirichlet((1.0, 1.0, 1.0), n).astype(np.float32)
    points = np.einsum("nk,nkd->nd", weights, anchors[np.column_stack([first, others])])
    points += rng.normal(scale=noise / np.sqrt(anchors.shape[1]), size=points.shape).astype(np.float32)
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32), first


def timed(fn, items) -> tuple[list, np.ndarray]:
    results, times = [], []
    for item in items:
        start = time.perf_counter()
        results.append(fn(item))
        times.append((time.perf_counter() - start) * 1000)
    return results, np.asarray(times)


def recall_at_10(found: list[list[str]], exact: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=False)]))


def fill(collection, ids: list[str], vectors: np.ndarray, batch: int, texts: list[str] | None = None) -> None:
    """Write the vectors the way LlamaIndex's ChromaVectorStore does, in Chroma-sized batches,
    with ``texts`` (else ``document i``) as the nodes' text."""
    vector_store = ChromaVectorStore(chroma_collection=collection)
    for start in range(0, len(ids), batch):
        end = min(len(ids), start + batch)
        vector_store.add(
            [
                TextNode(id_=ids[i], text=texts[i] if texts else f"document {i}", embedding=vectors[i].tolist())
                for i in range(start, end)
            ]
        )
