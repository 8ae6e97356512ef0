"""The record format: LlamaIndex nodes as ``ChromaVectorStore`` writes them, and back.

The data collection holds records in that format whether the app or the index wrote them,
so the app's ``ChromaVectorStore`` and the index read each other's writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import MetadataFilters
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

CLUSTER_ID_KEY = "cluster_id"


def chroma_where(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex filters as a Chroma ``where`` clause, translated as ``ChromaVectorStore`` does."""
    from llama_index.vector_stores.chroma.base import _to_chroma_filter

    where: dict[str, Any] = _to_chroma_filter(filters)
    return where


def node_record(node: BaseNode) -> tuple[str, str, dict[str, Any]]:
    """(id, text, metadata) of a node in ``ChromaVectorStore``'s record format."""
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    cleaned = {key: ("" if value is None else value) for key, value in metadata.items()}
    return node.node_id, node.get_content(metadata_mode=MetadataMode.NONE), cleaned


def write_nodes(collection: Any, nodes: Sequence[BaseNode]) -> None:
    """Write embedded nodes to a collection as ``ChromaVectorStore.add`` would."""
    records = [node_record(node) for node in nodes]
    collection.upsert(
        ids=[r[0] for r in records],
        documents=[r[1] for r in records],
        metadatas=[r[2] for r in records],
        embeddings=[node.get_embedding() for node in nodes],
    )


def to_node(doc_id: str, text: str, metadata: dict[str, Any], cluster_id: int) -> BaseNode:
    """A stored record as a LlamaIndex node, with its cluster in the metadata (kept out of
    what the LLM and the embedder see)."""
    try:
        node = metadata_dict_to_node(metadata, text=text)
    except (ValueError, KeyError, TypeError):  # a collection not written by LlamaIndex
        extra = {k: v for k, v in metadata.items() if not k.startswith("_") and k != CLUSTER_ID_KEY}
        node = TextNode(id_=doc_id, text=text, metadata=extra)
    node.metadata[CLUSTER_ID_KEY] = cluster_id
    for excluded in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
        if CLUSTER_ID_KEY not in excluded:
            excluded.append(CLUSTER_ID_KEY)
    return node
