"""PairwiseLLMReranker through the real litellm call path, against a stub Ollama server."""

import asyncio
import logging
import time

import pytest
from llama_index.core.prompts import PromptTemplate
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from cluster_retriever import PairwiseLLMReranker

from .stub_ollama import StubOllama, overlap

QUERY = "how do pastry chefs laminate croissant dough"
PASSAGES = [
    "Data engineers build Spark pipelines.",
    "The roadmap is owned by product managers.",
    "Chefs bake bread.",
    "Pastry chefs laminate dough for croissants.",
    "How pastry chefs laminate croissant dough with butter.",
    "Marketing managers launch products.",
]


def nodes() -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=1.0 - i / 10) for i, t in enumerate(PASSAGES)]


def ids(result):
    return [n.node.node_id for n in result]


def by_overlap() -> list[str]:
    return [f"n{i}" for i in sorted(range(len(PASSAGES)), key=lambda i: (-overlap(QUERY, PASSAGES[i]), i))]


@pytest.fixture
def stub():
    with StubOllama() as server:
        yield server


@pytest.mark.parametrize("model", ["ollama_chat/stub", "ollama/stub"])
@pytest.mark.parametrize("method", ["tournament", "allpair", "heapsort", "sliding", "budgeted"])
def test_reorders_by_what_the_judge_reads(stub, model, method):
    reranker = PairwiseLLMReranker(model=model, api_base=stub.url, method=method, top_n=3)
    result = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert ids(result) == by_overlap()[:3]
    assert [n.score for n in result] == sorted((n.score for n in result), reverse=True)
    assert reranker.last_stats.llm_calls == stub.requests > 0


def test_output_is_a_permutation_of_the_input(stub):
    result = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=100).postprocess_nodes(
        nodes(), query_str=QUERY
    )
    assert sorted(ids(result)) == sorted(ids(nodes())) and len(result) == len(PASSAGES)


async def test_async_calls_run_concurrently(stub):
    stub.delay = 0.05
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", max_concurrency=4)
    result = await reranker.apostprocess_nodes(nodes(), query_str=QUERY)
    assert ids(result)[:2] == by_overlap()[:2]
    assert 1 < stub.max_in_flight <= 4  # overlapping calls, never more than the bound
    assert reranker.last_stats.llm_calls == 6 * 5


def test_sync_path_is_concurrent_too(stub):
    stub.delay = 0.05
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", max_concurrency=8)
    reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert stub.max_in_flight > 1


async def test_sync_call_inside_a_running_loop(stub):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=2)
    assert ids(reranker.postprocess_nodes(nodes(), query_str=QUERY)) == by_overlap()[:2]


def test_same_pair_is_never_asked_twice(stub, tmp_path):
    cache = str(tmp_path / "verdicts.sqlite")
    first = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", cache_path=cache)
    first.postprocess_nodes(nodes(), query_str=QUERY)
    asked = stub.requests
    assert asked == first.last_stats.llm_calls == 30
    first.postprocess_nodes(nodes(), query_str=QUERY)
    assert stub.requests == asked and first.last_stats.cache_hits == 30
    again = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", cache_path=cache)
    assert ids(again.postprocess_nodes(nodes(), query_str=QUERY)) == ids(first.postprocess_nodes(nodes(), query_str=QUERY))
    assert stub.requests == asked and again.last_stats.llm_calls == 0


def test_timeouts_fall_back_to_first_stage_order(stub):
    stub.delay = 1.0
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, timeout=0.2, max_concurrency=16, method="allpair")
    started = time.perf_counter()
    result = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert ids(result) == ids(nodes())
    stats = reranker.last_stats
    # 16 calls in flight time out together; past 6 failures in a row it stops asking
    assert stats.failures == stats.llm_calls == 16 and stats.fell_back
    assert time.perf_counter() - started < 5


def test_http_errors_fall_back_to_first_stage_order(stub):
    stub.status = 500
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url)
    assert ids(reranker.postprocess_nodes(nodes(), query_str=QUERY)) == ids(nodes())
    assert reranker.last_stats.failures == reranker.last_stats.llm_calls >= 6 and reranker.last_stats.fell_back


def test_garbage_answers_fall_back_and_are_not_cached(stub):
    stub.answer = "The weather is nice today."
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair")
    assert ids(reranker.postprocess_nodes(nodes(), query_str=QUERY)) == ids(nodes())
    assert 6 <= reranker.last_stats.failures == reranker.last_stats.llm_calls < 30
    stub.answer = None
    assert ids(reranker.postprocess_nodes(nodes(), query_str=QUERY))[0] == by_overlap()[0]


def test_unreachable_llm_warns_once_and_keeps_the_order(caplog):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base="http://127.0.0.1:9", method="allpair")
    with caplog.at_level(logging.WARNING, logger="cluster_retriever"):
        result = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert ids(result) == ids(nodes())[:10]
    assert reranker.last_stats.fell_back
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


def test_call_budget_is_respected(stub):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", max_calls=8, max_concurrency=1)
    result = reranker.postprocess_nodes(nodes(), query_str=QUERY)
    assert stub.requests == reranker.last_stats.llm_calls == 8
    assert reranker.last_stats.skipped_over_budget == 22
    assert sorted(ids(result)) == sorted(ids(nodes()))


def test_both_orders_cancel_position_bias(stub):
    stub.answer = "B"  # a judge that always prefers whatever it is shown second
    both = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair")
    assert ids(both.postprocess_nodes(nodes(), query_str=QUERY)) == ids(nodes())  # every pair a tie
    one = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="allpair", both_orders=False)
    assert ids(one.postprocess_nodes(nodes(), query_str=QUERY)) == ids(nodes())[::-1]  # the bias decides
    assert one.last_stats.llm_calls == 15


def test_prompt_is_swappable(stub):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=2)
    assert set(reranker.get_prompts()) == {"pairwise_prompt", "setwise_prompt"}
    custom = PromptTemplate(
        "Query: <query>{query}</query>\nFirst: <passage_a>{passage_a}</passage_a>\n"
        "Second: <passage_b>{passage_b}</passage_b>\nReply A or B. CUSTOM"
    )
    reranker.update_prompts({"pairwise_prompt": custom})
    assert reranker.get_prompts()["pairwise_prompt"].get_template().endswith("CUSTOM")
    assert ids(reranker.postprocess_nodes(nodes(), query_str=QUERY)) == by_overlap()[:2]


def test_edge_cases(stub):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url)
    assert reranker.postprocess_nodes([], query_str=QUERY) == []
    single = nodes()[:1]
    assert ids(reranker.postprocess_nodes(single, query_str=QUERY)) == ["n0"]
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes(nodes())
    with pytest.raises(ValueError, match="needs the query"):
        reranker.postprocess_nodes(nodes(), query_bundle=QueryBundle(query_str="  "))
    with pytest.raises(ValueError):
        PairwiseLLMReranker(model="x/y", method="bogus")
    assert stub.requests == 0


def test_inside_a_query_engine(stub, index):
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=8, mode="flat"), llm=MockLLM(), node_postprocessors=[reranker]
    )
    response = asyncio.run(engine.aquery("pastry chef croissants"))
    assert len(response.source_nodes) == 2 and all(n.node.node_id.startswith("chef-") for n in response.source_nodes)
    assert reranker.last_stats.llm_calls > 0


def test_repeated_nodes_come_out_once_and_lone_surrogates_do_not_crash(stub):
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=10)
    twice = nodes() + nodes()[:3]
    assert sorted(ids(reranker.postprocess_nodes(twice, query_str=QUERY))) == sorted(ids(nodes()))
    broken = nodes()
    broken[0].node.set_content("pastry chefs \udc80 laminate")  # a lone surrogate from a badly decoded file
    result = reranker.postprocess_nodes(broken, query_str=QUERY)
    assert sorted(ids(result)) == sorted(ids(nodes()))


def test_every_rerank_reports_its_tokens_and_cost_through_litellm(stub):
    import litellm

    from .stub_ollama import tokens

    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, top_n=3, method="allpair")
    stats = reranker.rerank(nodes(), QUERY).stats
    prompts = [reranker._judge.render(QUERY, a, b) for a in PASSAGES for b in PASSAGES if a != b]
    assert stats.llm_calls == len(prompts) == stub.requests  # 6 candidates: every ordered pair once
    assert stats.prompt_tokens == sum(tokens(p) for p in prompts)  # litellm's usage, as the server counted it
    assert stats.completion_tokens == stats.llm_calls  # one letter an answer
    assert stats.cost_usd == 0.0  # litellm prices local Ollama models at nothing
    assert stats.wall_s > 0 and stats.stopped_by is None
    # a priced model: litellm's cost map prices each call
    litellm.register_model(
        {
            "ollama_chat/stub-priced": {
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
                "litellm_provider": "ollama_chat",
                "mode": "chat",
            }
        }
    )
    priced = PairwiseLLMReranker(model="ollama_chat/stub-priced", api_base=stub.url, top_n=3).rerank(nodes(), QUERY).stats
    assert priced.cost_usd == pytest.approx(priced.prompt_tokens * 1e-6 + priced.completion_tokens * 2e-6)


def test_budgeted_keeps_its_default_budget_through_litellm(stub):
    from cluster_retriever.rerank.budgeted import default_budget

    many = [NodeWithScore(node=TextNode(id_=f"m{i}", text=f"{PASSAGES[i % 6]} Variant {i}."), score=1.0) for i in range(30)]
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="budgeted", top_n=5)
    result = reranker.rerank(many, QUERY)
    assert stub.requests == result.stats.llm_calls <= default_budget(30, 5) == 80
    assert result.stats.completion_tokens == result.stats.llm_calls and result.stats.cost_usd == 0.0
    assert result.stats.prompt_tokens > 50 * result.stats.llm_calls  # the prompt and two passages, counted by the server
    assert len(result.nodes) == 5 and len({n.node.node_id for n in result.nodes}) == 5
    assert all("laminate" in n.node.get_content() for n in result.nodes[:2])  # the passages the judge prefers lead


def test_setwise_shows_four_passages_a_call_within_its_budget_through_litellm(stub):
    from cluster_retriever.rerank.setwise import default_set_budget

    many = [NodeWithScore(node=TextNode(id_=f"m{i}", text=f"{PASSAGES[i % 6]} Variant {i}."), score=1.0) for i in range(30)]
    reranker = PairwiseLLMReranker(model="ollama_chat/stub", api_base=stub.url, method="setwise", top_n=5)
    stats = reranker.rerank(many, QUERY).stats
    assert stub.requests == stats.llm_calls == stats.comparisons <= default_set_budget(30, 5) == 40
    assert stats.completion_tokens == stats.llm_calls and stats.prompt_tokens > 100 * stats.llm_calls  # four passages a call
    result = reranker.rerank(many, QUERY)  # the same query again: every set from the cache
    assert result.stats.llm_calls == 0 and result.stats.cache_hits == stats.llm_calls
    assert len({n.node.node_id for n in result.nodes}) == 5
    assert all("laminate" in n.node.get_content() for n in result.nodes[:2])  # the passages the judge prefers lead


def test_setwise_needs_a_judge_that_can_choose():
    class PairsOnly:
        cache_key = "pairs-only"

        async def __call__(self, query: str, passage_a: str, passage_b: str) -> str:
            return "A"

    reranker = PairwiseLLMReranker(model="custom", method="setwise", judge=PairsOnly())
    with pytest.raises(TypeError, match="choose"):
        reranker.rerank(nodes(), QUERY)


def openai_compatible(stub, **options) -> PairwiseLLMReranker:
    """A reranker on the stub's OpenAI-compatible endpoint (``/v1``, as Ollama serves it)."""
    return PairwiseLLMReranker(
        model="openai/stub", api_base=stub.url + "/v1", completion_kwargs={"api_key": "local"}, top_n=3, **options
    )


@pytest.mark.parametrize("method", ["budgeted", "allpair", "setwise"])
def test_log_probabilities_reach_every_method_through_litellm(stub, method):
    """``use_logprobs=True`` against an OpenAI-compatible endpoint (Ollama's /v1): every answer
    comes with the letters' probabilities, the stats say so, and the order follows them."""
    reranker = openai_compatible(stub, use_logprobs=True, method=method)
    result = reranker.rerank(nodes(), QUERY)
    assert ids(result.nodes) == by_overlap()[:3]
    stats = result.stats
    assert stats.llm_calls == stub.requests == stats.with_logprobs > 0 and stats.failures == 0
    assert stats.cost_usd is None  # a model litellm has no price for
    again = reranker.rerank(nodes(), QUERY)  # the shares come back from the cache
    assert again.stats.llm_calls == 0 and ids(again.nodes) == ids(result.nodes)
    default = openai_compatible(stub, method=method)
    assert default.use_logprobs is None and default.rerank(nodes(), QUERY).stats.with_logprobs > 0  # read here by default
    assert openai_compatible(stub, use_logprobs=False, method=method).rerank(nodes(), QUERY).stats.with_logprobs == 0


def test_a_server_refusing_logprobs_costs_no_comparison(stub):
    """Concurrent calls refused for asking logprobs (a 400 from an OpenAI-compatible server) are
    asked again without them: nothing fails, nothing falls back, the order is the letters'."""
    stub.refuse_logprobs = True
    result = openai_compatible(stub).rerank(nodes(), QUERY)
    stats = result.stats
    assert ids(result.nodes) == by_overlap()[:3]
    assert stats.failures == 0 and not stats.fell_back and stats.with_logprobs == 0 and stats.llm_calls > 0
    assert stub.requests == stats.llm_calls + stub.refused and stub.refused >= 1
