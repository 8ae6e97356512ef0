"""Peak memory of a build from a folder of text files, by corpus size and by text size.

    python bench/build_memory.py [--runs 10000x150,100000x150,10000x1200] [--model tokenlearn-static-model-64d]

Each run (DOCUMENTSxWORDS) generates that many text files of that many words (synthetic
sentences from a fixed vocabulary), then builds an index from the folder in a fresh
subprocess. A thread there samples the resident set every 20 ms; the figure is the peak
during the build minus the resident set just before it (libraries and model loaded).
Documents are streamed in batches: what must grow with the number of documents is the
vectors (N x dim floats, needed for clustering) and Chroma's own index, not the corpus
text, so the same N with 8x the text should need about the same memory. The static model
keeps the embedding time small enough to build 100k documents here.
Writes runs/build_memory.json.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import print_table, write_json

CHILD = """
import sys, threading, time
from cluster_retriever import ClusterIndex
from cluster_retriever.embeddings import resolve_embed_model

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

model = resolve_embed_model(sys.argv[3])
model.get_text_embedding("warm up")
before = peak = rss_mb()
done = threading.Event()

def sample():
    global peak
    while not done.wait(0.02):
        peak = max(peak, rss_mb())

threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
index = ClusterIndex.build(sys.argv[1], path=sys.argv[2], embed_model=model, show_progress=False)
seconds = time.perf_counter() - started
done.set()
print(len(index), seconds, before, max(peak, rss_mb()) - before)
"""


def write_corpus(folder: Path, n: int, words_per_doc: int = 150, seed: int = 0) -> int:
    rng = random.Random(seed)
    words = "data index cluster query vector search model retrieval library chroma embedding ranking rerank pipeline".split()
    size = 0
    for i in range(n):
        text = f"Document {i}\n" + " ".join(rng.choice(words) for _ in range(words_per_doc))
        (folder / f"{i // 1000:03d}").mkdir(exist_ok=True)
        (folder / f"{i // 1000:03d}" / f"{i}.txt").write_text(text)
        size += len(text)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="10000x150,100000x150,10000x1200")
    parser.add_argument("--model", default="tokenlearn-static-model-64d")
    parser.add_argument("--json", type=Path, default=Path("runs/build_memory.json"))
    args = parser.parse_args()
    rows = []
    for run in args.runs.split(","):
        n, words = (int(part) for part in run.split("x"))
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            text_mb = write_corpus(corpus, n, words) / 2**20
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(corpus), str(Path(tmp) / "chroma"), args.model],
                capture_output=True,
                text=True,
                check=True,
            )
            docs, seconds, before, growth = out.stdout.split()[-4:]
            rows.append(
                {
                    "documents": int(docs),
                    "words_per_doc": words,
                    "text_mb": text_mb,
                    "build_s": float(seconds),
                    "rss_before_mb": float(before),
                    "peak_growth_mb": float(growth),
                }
            )
    print_table(
        f"model {args.model}; growth = peak RSS during the build - RSS before it (libraries and model loaded)",
        ["documents", "words/doc", "text MB", "build s", "RSS before MB", "peak growth MB", "KB/doc"],
        [
            [
                row["documents"],
                row["words_per_doc"],
                f"{row['text_mb']:.0f}",
                f"{row['build_s']:.1f}",
                f"{row['rss_before_mb']:.0f}",
                f"{row['peak_growth_mb']:.0f}",
                f"{row['peak_growth_mb'] * 1024 / row['documents']:.2f}",
            ]
            for row in rows
        ],
    )
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
