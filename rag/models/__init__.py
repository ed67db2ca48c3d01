"""The domain's rows, one module a job; every model is importable from ``rag.models``."""

from rag.models.caches import CacheCounter, CachedAnswer, CachedAnswerUsage, CachedEmbedding
from rag.models.corpus import (
    ANSWER_HNSW_EF_CONSTRUCTION,
    ANSWER_HNSW_M,
    CHUNK_HNSW_EF_CONSTRUCTION,
    CHUNK_HNSW_M,
    DEFAULT_DIMENSIONS,
    DEFAULT_MODEL,
    CacheOutcome,
    Chunk,
    Collection,
    Document,
    Sentence,
    Visibility,
    collection_name_validator,
)
from rag.models.jobs import Job, JobKind, JobStatus, JobUpload
from rag.models.usage import ApiKey, EvalRun, Feedback, QueryLog, ThrottleCount

__all__ = [
    "ANSWER_HNSW_EF_CONSTRUCTION",
    "ANSWER_HNSW_M",
    "CHUNK_HNSW_EF_CONSTRUCTION",
    "CHUNK_HNSW_M",
    "DEFAULT_DIMENSIONS",
    "DEFAULT_MODEL",
    "ApiKey",
    "CacheCounter",
    "CacheOutcome",
    "CachedAnswer",
    "CachedAnswerUsage",
    "CachedEmbedding",
    "Chunk",
    "Collection",
    "Document",
    "EvalRun",
    "Feedback",
    "Job",
    "JobKind",
    "JobStatus",
    "JobUpload",
    "QueryLog",
    "Sentence",
    "ThrottleCount",
    "Visibility",
    "collection_name_validator",
]
