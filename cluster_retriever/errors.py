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
