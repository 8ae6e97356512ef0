"""The ``cluster-retriever`` command: build or adopt, list, query and inspect an index.

Heavy modules (Chroma, scikit-learn, the embedding model) load inside the commands, so
``--help`` answers at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import typer
from rich.console import Console
from rich.table import Table

from cluster_retriever.errors import ClusterRetrieverError

if TYPE_CHECKING:
    from llama_index.core.vector_stores.types import MetadataFilters

    from cluster_retriever.index import ClusterIndex

DEFAULT_NAME = "cluster_index"  # cluster_retriever.index.DEFAULT_NAME, without importing it
MODES = ("routed", "flat", "strict")
app = typer.Typer(help="Cluster-routed retrieval on Chroma.", no_args_is_help=True, add_completion=False)
console = Console()

IndexPath = typer.Option(Path("./chroma"), "--index-path", help="Chroma folder (embedded mode).")
Host = typer.Option(None, "--host", help="Chroma server host (server mode instead of --index-path).")
Port = typer.Option(8000, "--port", help="Chroma server port.")
Name = typer.Option(DEFAULT_NAME, "--name", help="Index name inside the Chroma store (`cluster-retriever list` shows them).")


def _fail(exc: Exception) -> None:
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(code=2)


def _client(index_path: Path, host: str | None, port: int) -> Any:
    from cluster_retriever.store.clients import make_client, require_store_path

    if host is None:
        require_store_path(index_path)
    return make_client(index_path, host, port)


def _open(name: str, index_path: Path, host: str | None, port: int) -> ClusterIndex:
    from cluster_retriever.index import ClusterIndex

    try:
        return ClusterIndex.open(name, path=index_path, host=host, port=port)
    except (ClusterRetrieverError, OSError, ValueError) as exc:
        _fail(exc)
        raise


def _filters(pairs: list[str]) -> MetadataFilters | None:
    """``key=value`` pairs as LlamaIndex filters (all must hold); values that read as JSON
    numbers or booleans are compared as such."""
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    if not pairs:
        return None
    leaves = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter takes key=value, not {pair!r}.")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if not isinstance(value, (str, int, float)):
            value = raw
        leaves.append(MetadataFilter(key=key, value=value))
    return MetadataFilters(filters=leaves)


@app.command()
def build(
    source: Path = typer.Argument(..., help="A BEIR folder (corpus.jsonl) or a folder of text files."),
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    name: str = Name,
    model: str | None = typer.Option(None, "--model", help="sentence-transformers name or path (default: all-MiniLM-L6-v2)."),
    n_clusters: str = typer.Option("auto", "--n-clusters", help="Number of clusters, or 'auto'."),
    random_state: int = typer.Option(0, "--random-state", help="KMeans seed."),
) -> None:
    """Embed, cluster and store every document under SOURCE."""
    from cluster_retriever.index import ClusterIndex

    try:
        k: int | Literal["auto"] = "auto" if n_clusters == "auto" else int(n_clusters)
        index = ClusterIndex.build(
            source, path=index_path, host=host, port=port, name=name, embed_model=model, n_clusters=k, random_state=random_state
        )
    except (ClusterRetrieverError, OSError, ValueError) as exc:
        _fail(exc)
    console.print(f"built {name!r}: {len(index)} documents in {index.n_clusters} clusters ({index.manifest.embed_model})")


@app.command()
def query(
    text: str = typer.Argument(..., help="The query."),
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    name: str = Name,
    top_k: int = typer.Option(5, "--top-k", help="Number of results."),
    mode: str = typer.Option("routed", "--mode", help=f"One of {', '.join(MODES)}."),
    n_probe: int | None = typer.Option(None, "--n-probe", help="Clusters to probe (default: adaptive)."),
    filter_: list[str] = typer.Option([], "--filter", help="key=value: only documents whose metadata matches (repeatable)."),
) -> None:
    """Retrieve the best documents for TEXT."""
    from cluster_retriever.retriever import ClusterRetriever

    index = _open(name, index_path, host, port)
    try:
        if mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}.")
        retriever = ClusterRetriever(
            index, similarity_top_k=top_k, mode=cast(Any, mode), n_probe=n_probe, filters=_filters(filter_)
        )
        result = retriever.search(text)
    except (ClusterRetrieverError, OSError, ValueError) as exc:
        _fail(exc)
    hits, stats = result.hits, result.stats
    table = Table("rank", "score", "cluster", "document", "text")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.node.get_content().split())[:90]
        document = hit.node.ref_doc_id or hit.node.node_id  # the id the app gave, not a chunk's UUID
        table.add_row(str(rank), f"{hit.score:.3f}", str(hit.node.metadata["cluster_id"]), document, snippet)
    console.print(table)
    console.print(
        f"probed {stats.clusters_probed} of {index.n_clusters} clusters, scanned {stats.fraction_scanned:.1%} of the corpus"
    )


@app.command()
def adopt(
    collection: str = typer.Argument(..., help="The app's Chroma collection (written by LlamaIndex's ChromaVectorStore)."),
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    model: str | None = typer.Option(
        None, "--model", help="The embedding model that wrote the collection (default: all-MiniLM-L6-v2)."
    ),
    name: str | None = typer.Option(None, "--name", help="Index name (default: <collection>-clusters)."),
) -> None:
    """Cluster an existing collection in place (zero copy), as ClusterVectorStore.from_chroma does."""
    from cluster_retriever.vector_store import ClusterVectorStore

    try:
        client = _client(index_path, host, port)
        source = client.get_collection(collection, embedding_function=None)
        store = ClusterVectorStore.from_chroma(source, embed_model=model, name=name)
    except (ClusterRetrieverError, OSError, ValueError) as exc:
        _fail(exc)
    except Exception as exc:  # chromadb's NotFoundError for a missing collection
        from cluster_retriever.store.clients import collection_names

        _fail(ValueError(f"{exc}; the store's collections: {collection_names(client)}"))
    index = store.index
    if index is None:
        _fail(ValueError(f"Collection {collection!r} is empty: nothing to cluster yet."))
        return
    console.print(
        f"adopted {collection!r} as {index.store.name!r}: {len(index)} documents in {index.n_clusters} clusters "
        f"(query it with --name {index.store.name})"
    )


@app.command(name="list")
def list_indexes(index_path: Path = IndexPath, host: str | None = Host, port: int = Port) -> None:
    """The cluster indexes and the app collections a Chroma store holds."""
    from cluster_retriever.store.chroma import ChromaStore
    from cluster_retriever.store.clients import collection_names, index_names

    try:
        client = _client(index_path, host, port)
        names = index_names(client)
    except (ClusterRetrieverError, OSError, ValueError) as exc:
        _fail(exc)
    table = Table("index", "documents", "clusters", "model", "data collection")
    for index_name in names:
        manifest = ChromaStore(client, index_name).manifests.read()
        if manifest is None:
            table.add_row(index_name, "-", "-", "-", "(being built)")
            continue
        count = ChromaStore(client, index_name).count(manifest.data_collection)
        table.add_row(index_name, str(count), str(manifest.n_clusters), manifest.embed_model, manifest.data_collection)
    console.print(table)
    adopted = {ChromaStore(client, n).manifests.read() for n in names} - {None}
    others = [c for c in collection_names(client) if c not in {m.data_collection for m in adopted if m is not None}]
    if others:
        console.print(f"collections without a cluster index: {', '.join(others)} (`cluster-retriever adopt NAME`)")


@app.command()
def info(
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    name: str = Name,
    terms: int = typer.Option(5, "--terms", help="Top terms shown per cluster."),
) -> None:
    """Show the manifest and each cluster's size and top terms."""
    index = _open(name, index_path, host, port)
    manifest = index.manifest
    console.print(
        f"{name!r}: {index.doc_count} documents, {manifest.n_clusters} clusters, "
        f"model {manifest.embed_model} ({manifest.dimension}-d), generation {manifest.generation}, updated {manifest.updated_at}"
    )
    table = Table("cluster", "size", "top terms")
    for cluster, (size, words) in enumerate(zip(index.cluster_sizes, index.top_terms(terms), strict=False)):
        table.add_row(str(cluster), str(size), ", ".join(words))
    console.print(table)


@app.command()
def repair(
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    name: str = Name,
) -> None:
    """Remove generations left by killed builds and say what was done."""
    from cluster_retriever.index import repair as repair_index

    try:
        report = repair_index(name, path=index_path, host=host, port=port)
    except ClusterRetrieverError as exc:
        _fail(exc)
    dropped = report["orphan_generations_dropped"]
    console.print(f"{name!r}: generation {report['generation']} is live; dropped {len(dropped)} orphan generation(s) {dropped}")


@app.command()
def tune(
    queries: Path = typer.Argument(..., help="Sample queries: a text file, one per line, or a BEIR queries.jsonl."),
    index_path: Path = IndexPath,
    host: str | None = Host,
    port: int = Port,
    name: str = Name,
    target: float = typer.Option(0.95, "--target", help="Recall of the exact top-k to reach."),
    top_k: int = typer.Option(10, "--top-k", help="The k of recall@k."),
) -> None:
    """Find the smallest --n-probe whose results hold TARGET of the exact top-k on your queries."""
    from cluster_retriever.tuning import tune_n_probe

    index = _open(name, index_path, host, port)
    try:
        lines = [line for line in queries.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [json.loads(line)["text"] for line in lines] if queries.suffix == ".jsonl" else lines
        tuning = tune_n_probe(index, texts, target_recall=target, top_k=top_k)
    except (ClusterRetrieverError, OSError, ValueError, KeyError) as exc:
        _fail(exc)
    table = Table("n_probe", f"recall@{top_k}", "scanned")
    for point in (tuning.default, *tuning.curve):
        table.add_row(
            "default" if point.n_probe is None else str(point.n_probe), f"{point.recall:.3f}", f"{point.fraction_scanned:.1%}"
        )
    console.print(table)
    if tuning.n_probe is None:
        console.print(f"only probing every cluster (--mode flat) reaches recall@{top_k} {target} on these queries")
    else:
        console.print(f"--n-probe {tuning.n_probe} reaches recall@{top_k} >= {target} on these {len(texts)} queries")


if __name__ == "__main__":
    app()
