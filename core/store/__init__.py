"""The database: the connection, the embedded PostgreSQL server (sizing, upgrading, replicas), the
project's own tables (which model answers searches, the indexer's status, the folders' survey, the
text read in pictures) and the shapes of its indexes (HNSW, text).

It may import `core.models` (the shapes of what models compute, stored here), `core.media` and
`core`'s top modules.
"""
