"""The index: ``ClusterIndex`` (``cluster_index``) over what comes in (``ingest``), the live
snapshot queries read (``snapshot``, ``state``), loading it from the store (``loading``),
writing (``writer``), one query (``search``) and ``repair``."""

from cluster_retriever.index.cluster_index import ClusterIndex
from cluster_retriever.index.repair import DEFAULT_NAME, repair

__all__ = ["DEFAULT_NAME", "ClusterIndex", "repair"]
