"""Chat over your documents: ClusterRetriever (+ optional PairwiseLLMReranker) in a LlamaIndex chat engine.

    python examples/chat.py --docs path/to/folder --llm ollama_chat/llama3.2 --api-base http://localhost:11434
    python examples/chat.py --llm ollama_chat/llama3.2 --rerank --question "What is information retrieval?"

Without --docs it indexes the CISI abstracts beside this repository (../shared/datasets/cisi).
Each answer is printed with its sources: title, score and cluster.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from llama_index.core.chat_engine import CondensePlusContextChatEngine  # noqa: E402
from llama_index.llms.litellm import LiteLLM  # noqa: E402

from cluster_retriever import ClusterIndex, ClusterRetriever, PairwiseLLMReranker  # noqa: E402
from cluster_retriever.errors import IndexNotFoundError  # noqa: E402

DEFAULT_DOCS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cisi"


def open_or_build(docs: Path, index_path: Path) -> ClusterIndex:
    try:
        return ClusterIndex.open(path=index_path)
    except IndexNotFoundError:
        print(f"building an index of {docs} in {index_path} ...")
        return ClusterIndex.build(docs, path=index_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="Folder of text files or a BEIR folder.")
    parser.add_argument("--index-path", type=Path, default=Path("runs/chat_index"), help="Where the Chroma index lives.")
    parser.add_argument("--llm", required=True, help="litellm model, e.g. ollama_chat/llama3.2.")
    parser.add_argument("--api-base", default=None, help="LLM server URL, e.g. http://localhost:11434.")
    parser.add_argument("--top-k", type=int, default=4, help="Sources per answer.")
    parser.add_argument("--rerank", action="store_true", help="Rerank 12 candidates with PairwiseLLMReranker.")
    parser.add_argument("--question", help="Ask one question and exit (no interactive loop).")
    args = parser.parse_args()

    index = open_or_build(args.docs, args.index_path)
    retriever = ClusterRetriever(index, similarity_top_k=12 if args.rerank else args.top_k)
    postprocessors = [PairwiseLLMReranker(model=args.llm, api_base=args.api_base, top_n=args.top_k)] if args.rerank else []
    llm = LiteLLM(model=args.llm, api_base=args.api_base, temperature=0)
    chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm, node_postprocessors=postprocessors)

    questions = [args.question] if args.question else iter(lambda: input("\nyou> ").strip(), "")
    for question in questions:
        if not question.strip():
            continue
        reply = chat.chat(question)
        print(f"\nassistant> {reply.response}\n\nsources:")
        for rank, source in enumerate(reply.source_nodes, 1):
            title = source.node.metadata.get("title") or source.node.get_content()[:60]
            print(f"  {rank}. [{source.score:.3f}] cluster {source.node.metadata.get('cluster_id')}: {title}")


if __name__ == "__main__":
    main()
