"""SearchParams: validated once when made, frozen, overridable per call."""

import dataclasses

import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

from cluster_retriever import ClusterIndex, ClusterRetriever, Restriction, SearchParams

from .hash_embedding import HashEmbedding


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mode", "fast", "mode must be one of"),
        ("n_probe", 0, "n_probe must be a positive int"),
        ("n_probe", 2.5, "n_probe must be a positive int"),
        ("target_recall", 0.0, r"target_recall must be in \(0, 1\]"),
        ("target_recall", True, "target_recall"),
        ("boundary_margin", -0.1, "boundary_margin"),
        ("exact_scan_max_floats", -1, "exact_scan_max_floats must be an int >= 0"),
        ("scan_kernel", "gpu", "scan_kernel must be one of"),
        ("restriction", {"tenant": "acme"}, "Restriction.of"),
    ],
)
def test_bad_parameters_are_refused_when_made_with_what_to_use(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SearchParams(**{field: value})
    with pytest.raises((ValueError, TypeError), match=message):
        SearchParams().with_(**{field: value})  # a copy is validated again


def test_params_are_frozen_and_restrictions_take_id_lists_only():
    params = SearchParams(n_probe=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.n_probe = 5  # type: ignore[misc]
    assert params.with_(n_probe=5).n_probe == 5 and params.n_probe == 3
    with pytest.raises(TypeError, match=r"pass \['n1'\]"):
        Restriction(node_ids="n1")  # type: ignore[arg-type]
    assert Restriction.of(node_ids=["a", "b"]).node_ids == ("a", "b")
    assert Restriction().is_empty and not Restriction.of(node_ids=["a"]).is_empty


def test_the_index_owns_its_defaults_and_a_call_overrides_them(tmp_path):
    embed = HashEmbedding()
    docs = [Document(id_=f"d{i}", text=f"topic {i % 4} words {i}", metadata={"shard": i % 2}) for i in range(60)]
    index = ClusterIndex.build(
        docs, path=tmp_path, embed_model=embed, n_clusters=4, show_progress=False, search_params=SearchParams(mode="strict")
    )
    vector = np.asarray(embed.get_query_embedding("topic 1 words 5"), np.float32)
    vector /= np.linalg.norm(vector)
    strict = index.search(vector, 5, with_nodes=False)
    flat = index.search(vector, 5, SearchParams(mode="flat"), with_nodes=False)
    assert strict.stats.clusters_probed == 1 and flat.stats.exact and flat.stats.clusters_probed == 4
    shard_1 = MetadataFilters(filters=[MetadataFilter(key="shard", value=1)])
    only = index.search(vector, 60, SearchParams(mode="flat").restricted(shard_1), with_nodes=False)
    assert len(only.ids) == 30 and all(int(doc_id[1:]) % 2 == 1 for doc_id in only.ids)
    # a retriever builds its params once over the index's, with its own settings on top
    retriever = ClusterRetriever(index, similarity_top_k=5, mode="routed", n_probe=2)
    assert retriever.params.mode == "routed" and retriever.params.n_probe == 2
    assert retriever.search("topic 1 words 5").stats.clusters_probed == 2
    with pytest.raises(ValueError, match="mode must be one of"):
        ClusterRetriever(index, mode="fast")  # type: ignore[arg-type]
