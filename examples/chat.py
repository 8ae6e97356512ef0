"""Chat over your documents: ClusterRetriever (+ optional PairwiseLLMReranker) in a LlamaIndex chat engine.

    python examples/chat.py                                   # retrieval only, over examples/docs
    python examples/chat.py --docs path/to/folder --llm ollama_chat/llama3.2 --api-base http://localhost:11434
    python examples/chat.py --llm ollama_chat/llama3.2 --rerank --question "How many vacation days do I get?"

Without --llm it shows the sources it would answer from. --docs is a folder of text files
(first line: title) or a BEIR folder; by default the small handbook in examples/docs.
Each answer is printed with its sources: title, score and cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

from llama_index.core.schema import NodeWithScore  # noqa: E402

from cluster_retriever import ClusterIndex, ClusterRetriever  # noqa: E402
from cluster_retriever.errors import IndexNotFoundError  # noqa: E402

DEFAULT_DOCS = Path(__file__).resolve().parent / "docs"


def open_or_build(docs: Path, index_path: Path) -> ClusterIndex:
    try:
        return ClusterIndex.open(path=index_path)
    except IndexNotFoundError:
        print(f"building an index of {docs} in {index_path} ...")
        return ClusterIndex.build(docs, path=index_path)


def show_sources(sources: list[NodeWithScore]) -> None:
    print("sources:")
    for rank, source in enumerate(sources, 1):
        title = source.node.metadata.get("title") or source.node.get_content()[:60]
        print(f"  {rank}. [{source.score:.3f}] cluster {source.node.metadata.get('cluster_id')}: {title}")


def unreachable(exc: Exception) -> bool:
    """A connection that could not be made (the LLM server is not running)."""
    import litellm

    return isinstance(exc, (litellm.exceptions.APIConnectionError, litellm.exceptions.Timeout, ConnectionError))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="Folder of text files or a BEIR folder.")
    parser.add_argument("--index-path", type=Path, default=Path("runs/chat_index"), help="Where the Chroma index lives.")
    parser.add_argument("--llm", default=None, help="litellm model, e.g. ollama_chat/llama3.2 (none: retrieval only).")
    parser.add_argument("--api-base", default=None, help="LLM server URL, e.g. http://localhost:11434.")
    parser.add_argument("--top-k", type=int, default=4, help="Sources per answer.")
    parser.add_argument("--rerank", action="store_true", help="Rerank 12 candidates with PairwiseLLMReranker (needs --llm).")
    parser.add_argument("--question", help="Ask one question and exit (no interactive loop).")
    args = parser.parse_args()
    if args.rerank and not args.llm:
        parser.error("--rerank needs --llm (the reranker asks the LLM)")

    index = open_or_build(args.docs, args.index_path)
    retriever = ClusterRetriever(index, similarity_top_k=12 if args.rerank else args.top_k)
    chat = None
    if args.llm:
        import litellm
        from llama_index.core.chat_engine import CondensePlusContextChatEngine
        from llama_index.llms.litellm import LiteLLM

        from cluster_retriever import PairwiseLLMReranker

        litellm.suppress_debug_info = True  # no banner on every failed call
        postprocessors = [PairwiseLLMReranker(model=args.llm, api_base=args.api_base, top_n=args.top_k)] if args.rerank else []
        llm = LiteLLM(model=args.llm, api_base=args.api_base, temperature=0, max_retries=0, timeout=120)
        chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm, node_postprocessors=postprocessors)

    questions = [args.question] if args.question else iter(lambda: input("\nyou> ").strip(), "")
    for question in questions:
        if not question.strip():
            continue
        if chat is None:
            show_sources(retriever.retrieve(question))
            continue
        try:
            reply = chat.chat(question)
        except Exception as exc:
            if not unreachable(exc):
                raise
            where = args.api_base or "the provider's default address"
            print(
                f"error: cannot reach the LLM {args.llm} at {where}: start it (for Ollama: `ollama serve`, then "
                f"`ollama pull {args.llm.split('/', 1)[-1]}`), or run without --llm for retrieval only.",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        print(f"\nassistant> {reply.response}\n")
        show_sources(reply.source_nodes)


if __name__ == "__main__":
    main()
