"""What staying fresh costs: the staleness check, refresh() and refresh(full=True).

    python bench/freshness.py [--n 20000]

An embedded index of N records with a tenant each (a 32-d hashing embedder from the tests, so
the figure is about storage, not the model). Then: a record re-added through a second handle
(found by the staleness check, by its assignment's version); one record written straight to
the data collection, as an app's own ChromaVectorStore would (found by the check's count);
one record's tenant changed in place by the app (found by refresh(), which reads every
record's metadata). Writes runs/freshness.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _report import print_table, write_json
from llama_index.core import Document

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cluster_retriever import ClusterIndex  # noqa: E402
from tests.hash_embedding import HashEmbedding, text_of  # noqa: E402


def timed_ms(action, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        action()
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("runs/freshness.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        docs = [Document(id_=f"d{i}", text=text_of(i), metadata={"tenant": f"t{i % 7}"}) for i in range(args.n)]
        index = ClusterIndex.build(docs, path=folder, embed_model=HashEmbedding(), show_progress=False)
        figures = {
            "check, nothing moved": timed_ms(index._live.refresh_if_moved, 200),
            "refresh(), nothing moved": timed_ms(index.refresh, 5),
        }
        other = ClusterIndex.open(path=folder, embed_model=HashEmbedding())
        other.add([Document(id_="d1", text="rewritten through another handle", metadata={"tenant": "t9"})], replace=True)
        figures["check + follow 1 record re-added by another handle"] = timed_ms(index._live.refresh_if_moved)
        assert index.lists.metadatas[list(index.lists.ids).index("d1")]["tenant"] == "t9"
        data = index.manifest.data_collection
        index.store.add_records(data, ["external"], index.lists.vectors[:1], ["written elsewhere"], [{"source": "app"}])
        figures["check + reconcile of 1 external record"] = timed_ms(index._live.refresh_if_moved)
        collection = index.store._collection(data)
        collection.update(ids=["d2"], metadatas=[{"tenant": "moved"}])  # the app's own in-place change
        figures["refresh() following 1 in-place metadata change"] = timed_ms(index.refresh)
        assert index.lists.metadatas[list(index.lists.ids).index("d2")]["tenant"] == "moved"
        figures["refresh(full=True)"] = timed_ms(lambda: index.refresh(full=True))
        index.close()
    print_table(f"Freshness, {args.n:,} records (embedded)", ["operation", "ms"], [[k, f"{v:.1f}"] for k, v in figures.items()])
    write_json(args.out, {"n": args.n, **figures})


if __name__ == "__main__":
    main()
