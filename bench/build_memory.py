"""Peak memory of a build from a folder of text files, at two corpus sizes.

    python bench/build_memory.py [--sizes 10000,100000] [--model tokenlearn-static-model-64d]

Generates N text files of about 1 kB (synthetic sentences from a fixed vocabulary), then
builds an index from the folder in a fresh subprocess and reads its peak RSS. Documents are
streamed in batches; what must grow with N is the vectors (N x dim floats, needed for
clustering) and Chroma's own HNSW index, not the corpus text. The static model keeps the
embedding time small enough to build 100k documents here. Writes runs/build_memory.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, time
from cluster_retriever import ClusterIndex
started = time.perf_counter()
index = ClusterIndex.build(sys.argv[1], path=sys.argv[2], embed_model=sys.argv[3], show_progress=False)
print(len(index), time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
BASELINE = """
import resource
from cluster_retriever import ClusterIndex
from cluster_retriever.embeddings import resolve_embed_model
import sys
resolve_embed_model(sys.argv[1]).get_text_embedding("warm up")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_corpus(folder: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    words = "data index cluster query vector search model retrieval library chroma embedding ranking rerank pipeline".split()
    size = 0
    for i in range(n):
        text = f"Document {i}\n" + " ".join(rng.choice(words) for _ in range(150))
        (folder / f"{i // 1000:03d}").mkdir(exist_ok=True)
        (folder / f"{i // 1000:03d}" / f"{i}.txt").write_text(text)
        size += len(text)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--model", default="tokenlearn-static-model-64d")
    parser.add_argument("--json", type=Path, default=Path("runs/build_memory.json"))
    args = parser.parse_args()
    baseline = float(subprocess.run([sys.executable, "-c", BASELINE, args.model], capture_output=True, text=True, check=True).stdout.split()[-1])
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            text_mb = write_corpus(corpus, n) / 2**20
            out = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(Path(tmp) / "chroma"), args.model], capture_output=True, text=True, check=True)
            docs, seconds, peak_mb = out.stdout.split()[-3:]
            rows.append({"documents": int(docs), "text_mb": text_mb, "build_s": float(seconds), "peak_rss_mb": float(peak_mb), "baseline_rss_mb": baseline})
    print(f"model {args.model}; baseline RSS (libraries + model loaded) {baseline:.0f} MB")
    print(f"{'documents':>10}{'text MB':>9}{'build s':>9}{'peak RSS MB':>13}{'above baseline':>16}")
    for row in rows:
        print(f"{row['documents']:>10}{row['text_mb']:>9.0f}{row['build_s']:>9.1f}{row['peak_rss_mb']:>13.0f}{row['peak_rss_mb'] - baseline:>16.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
