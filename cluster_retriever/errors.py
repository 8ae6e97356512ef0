"""Exceptions raised by cluster_retriever. Each message says what to do next."""


class ClusterRetrieverError(Exception):
    """Base class for every error this package raises on purpose."""


class EmptyCorpusError(ClusterRetrieverError, ValueError):
    """The documents given to build or add an index were empty."""


class EmptyQueryError(ClusterRetrieverError, ValueError):
    """A query was empty or whitespace only."""


class DuplicateIdError(ClusterRetrieverError, ValueError):
    """Two documents share an id, or a new document reuses a stored id."""


class EmbeddingMismatchError(ClusterRetrieverError, ValueError):
    """The query embedder differs from the one the index was built with."""


class IndexNotFoundError(ClusterRetrieverError, FileNotFoundError):
    """No cluster index of that name exists in the Chroma store."""


class JudgeUnreachable(ClusterRetrieverError, ConnectionError):
    """The reranker's LLM cannot be reached at all (connection refused, unknown host)."""


class ConcurrentWriteError(ClusterRetrieverError, RuntimeError):
    """Another writer changed the index between this write's read and its commit."""


class IndexLockedError(ClusterRetrieverError, RuntimeError):
    """Another process holds the embedded store's writer lock."""


class IndexCorruptedError(ClusterRetrieverError, RuntimeError):
    """The stored index is damaged (a missing collection, a bad manifest, out-of-range cluster ids)."""


class StaleIndexError(ClusterRetrieverError, RuntimeError):
    """The index changed under this handle in a way it could not follow; reopen it."""


class InvalidQueryError(ClusterRetrieverError, ValueError):
    """A query vector is not finite or has no direction."""


class StoreOutOfSyncError(ClusterRetrieverError, RuntimeError):
    """Another process wrote an embedded Chroma folder, and Chroma's embedded client in this
    process cannot read those records until the process restarts."""


class InvalidEmbeddingError(ClusterRetrieverError, ValueError):
    """A node to store has an embedding that is not finite or has no direction."""
