"""Why filter by cluster: product manager vs product marketing manager profiles.

    python examples/role_confusion.py

The profiles are GENERATED from templates (no real people or real data): three roles
whose descriptions share words ("product", "manager", "launch") but not meaning. For
queries asking for one role, it prints the precision of that role in the top 10 for
flat (exact) search, routed search (the default) and strict search (nearest cluster only).
"""

from __future__ import annotations

import os
import random
import tempfile

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_key, _value)

from llama_index.core import Document  # noqa: E402

from cluster_retriever import ClusterIndex, ClusterRetriever  # noqa: E402

ROLES = {
    "product marketing manager": [
        "owns positioning and messaging for {product}",
        "runs go-to-market launches for {product}",
        "writes competitive battlecards and sales enablement decks",
        "sets pricing pages and launch campaigns",
        "interviews customers to sharpen the value proposition",
        "works with the product manager on launch timing",
        "briefs product and engineering on market needs",
    ],
    "product manager": [
        "owns the roadmap for {product}",
        "writes user stories and prioritises the backlog",
        "runs sprint planning with engineering",
        "defines requirements and acceptance criteria for {product}",
        "analyses feature usage to decide what to build next",
        "partners with product marketing on launches",
        "presents the product roadmap to sales and marketing",
    ],
    "data engineer": [
        "builds ETL pipelines for {product}",
        "maintains Airflow DAGs and Spark jobs",
        "models the warehouse in dbt",
        "tunes SQL queries and partitions tables",
        "owns data quality checks",
    ],
}
PRODUCTS = ["a payments app", "a CRM", "an analytics suite", "a mobile bank", "a design tool", "a video platform"]
QUERIES = {
    "product marketing manager": ["product marketing manager for launch messaging", "who owns positioning and go-to-market"],
    "product manager": ["product manager who owns the roadmap", "who prioritises the backlog with engineering"],
    "data engineer": ["data engineer for Spark pipelines", "who builds ETL and warehouse models"],
}


def generate_profiles(per_role: int = 40, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for role, duties in ROLES.items():
        for i in range(per_role):
            picked = rng.sample(duties, 4)
            text = (
                f"{role.title()} at {rng.choice(PRODUCTS)}. "
                + "; ".join(d.format(product=rng.choice(PRODUCTS)) for d in picked)
                + "."
            )
            docs.append(Document(id_=f"{role.replace(' ', '-')}-{i}", text=text, metadata={"role": role}))
    return docs


def main() -> None:
    print("NOTE: the profiles below are generated from templates; they are not real data.\n")
    docs = generate_profiles()
    with tempfile.TemporaryDirectory() as tmp:
        index = ClusterIndex.build(docs, path=tmp, n_clusters=6, show_progress=False)
        modes = ("flat", "routed", "strict")
        print(f"{len(docs)} generated profiles, {index.n_clusters} clusters; precision of the asked role in the top 10\n")
        print(f"{'query':<48}" + "".join(f"{m:>9}" for m in modes))
        totals = {m: [] for m in modes}
        for role, queries in QUERIES.items():
            for query in queries:
                cells = []
                for mode in modes:
                    hits = ClusterRetriever(index, similarity_top_k=10, mode=mode).retrieve(query)
                    precision = sum(h.node.metadata["role"] == role for h in hits) / 10
                    totals[mode].append(precision)
                    cells.append(f"{precision:>9.1f}")
                print(f"{query:<48}" + "".join(cells))
        print(f"{'mean':<48}" + "".join(f"{sum(v) / len(v):>9.2f}" for v in totals.values()))


if __name__ == "__main__":
    main()
