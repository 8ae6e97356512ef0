"""Opening the memory-mapped lists file at 1M vectors: time and resident memory.

    python bench/lists_file_open.py [--size 1000000] [--dtype float32]

Isolates the lists file's part of ``ClusterIndex.open`` at a size where filling and adopting
a Chroma collection here would take hours: synthetic unit vectors (384-d) in sqrt(n) * 5.2
clusters of random membership, written with ``ListsFile.save``; then, in a fresh process,
``ListsFile.load`` is timed and RSS measured after it, and after 20 scans of 2% of the
clusters each (the memory a process holds grows with the clusters its queries touch).
Chroma's part of open (manifest, count, centroids: three small reads) is not included.
Writes runs/lists_file_open.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import grown, resident_mb, write_json

from cluster_retriever.scan.lists import InvertedLists
from cluster_retriever.store.lists_file import ListsFile

DIM = 384
QUERIES = 20


def write(folder: Path, n: int, dtype: str) -> None:
    rng = np.random.default_rng(0)
    k = int(5.2 * np.sqrt(n))
    centroids = rng.normal(size=(k, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    vectors = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: the generator's float64 would double the peak
        chunk = rng.normal(size=(min(100_000, n - start), DIM)).astype(np.float32)
        vectors[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    labels = np.sort(rng.integers(0, k, size=n))
    ids = np.asarray([f"doc-{i:08d}" for i in range(n)], dtype=object)
    lists = InvertedLists.from_sorted(centroids, ids, vectors, labels, lambda: [{} for _ in range(n)], np.ones(n, np.float32))
    ListsFile(folder, "bench", dtype).save(lists, generation=1, version=1, data_uuid="synthetic")


def probe(folder: str, dtype: str) -> None:
    before = resident_mb()
    started = time.perf_counter()
    lists, _ = ListsFile(Path(folder), "bench", dtype).load(1, "synthetic", DIM)  # type: ignore[misc]
    load_s = time.perf_counter() - started
    after_load = resident_mb()
    rng = np.random.default_rng(1)
    per_query = max(1, lists.n_clusters // 50)
    touched: set[int] = set()
    started = time.perf_counter()
    for _ in range(QUERIES):
        query = rng.normal(size=DIM).astype(np.float32)
        probes = rng.choice(lists.n_clusters, per_query, replace=False)
        touched.update(probes.tolist())
        lists.scan(query / np.linalg.norm(query), probes, 10)
    scan_ms = (time.perf_counter() - started) * 1000 / QUERIES
    mb = 1 / 2**20
    print(
        json.dumps(
            {
                "load_s": load_s,
                "rss_after_load_mb": grown(before, after_load),
                "rss_after_queries_mb": grown(before, resident_mb()),
                "clusters_touched": len(touched) / lists.n_clusters,
                "vectors_mb": lists.vectors.nbytes * mb,
                "mean_scan_ms": scan_ms,
                "n_clusters": lists.n_clusters,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--json", type=Path, default=Path("runs/lists_file_open.json"))
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.dtype)
        return
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write(Path(folder), args.size, args.dtype)
        write_s = time.perf_counter() - started
        shown = subprocess.run(
            [sys.executable, __file__, "--probe", folder, "--dtype", args.dtype], capture_output=True, text=True, check=True
        )
        result = {"size": args.size, "dtype": args.dtype, "write_s": write_s, **json.loads(shown.stdout.strip().splitlines()[-1])}
    print(
        f"{result['size']:,} x {DIM}-d {result['dtype']} ({result['vectors_mb']:.0f} MB of vectors, k {result['n_clusters']}): "
        f"load {result['load_s']:.2f} s, RSS anon/file +{result['rss_after_load_mb']['anon']:.0f}/"
        f"{result['rss_after_load_mb']['file']:.0f} MB after load, +{result['rss_after_queries_mb']['anon']:.0f}/"
        f"{result['rss_after_queries_mb']['file']:.0f} MB after {QUERIES} queries of 2% of the clusters each "
        f"({result['clusters_touched']:.0%} of the clusters touched) "
        f"({result['mean_scan_ms']:.1f} ms per scan); written in {result['write_s']:.0f} s"
    )
    write_json(args.json, [result])


if __name__ == "__main__":
    main()
