"""A writer process for the cross-process filter test: applies metadata changes read from
stdin, one JSON line each, to an index and its app collection on a Chroma server, and
answers "ok" once each is stored.

    python -m tests.metadata_writer PORT COLLECTION INDEX_NAME

Lines: {"op": "app_upsert" | "library_replace" | "delete", "i": <node number>, "tenant": ...}.
"""

from __future__ import annotations

import json
import sys

import chromadb
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from cluster_retriever import ClusterIndex

from .hash_embedding import HashEmbedding, text_of


def main() -> None:
    port, collection_name, index_name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    embed = HashEmbedding()
    client = chromadb.HttpClient(host="127.0.0.1", port=port)
    collection = client.get_collection(collection_name)
    index = ClusterIndex.open(index_name, host="127.0.0.1", port=port, embed_model=embed)
    for line in sys.stdin:
        change = json.loads(line)
        i, tenant = change["i"], change["tenant"]
        text = text_of(i) if change["op"] == "app_upsert" else f"{text_of(i)} moved elsewhere"
        node = TextNode(id_=f"n{i}", text=text, metadata={"tenant": tenant})
        node.embedding = embed.get_text_embedding(text)
        if change["op"] == "app_upsert":  # the app's own write, in LlamaIndex's record format
            metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
            collection.upsert(ids=[node.node_id], embeddings=[node.embedding], documents=[text], metadatas=[metadata])
        elif change["op"] == "library_replace":
            index.add([node], replace=True)
        else:
            index.delete([node.node_id], missing_ok=True)
        print("ok", flush=True)


if __name__ == "__main__":
    main()
