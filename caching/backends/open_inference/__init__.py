"""Open Inference Protocol (KServe v2) in JSON: model metadata, request tensors and answer rows.

No transport here: the ``http`` backend fetches and posts, passing in what it received; this package
decides what each request holds (:mod:`.tensors`) and what each answer means (:mod:`.answers`),
from what the model server declared (:mod:`.metadata`).
"""

from caching.backends.open_inference.answers import batch_result, merged_result
from caching.backends.open_inference.metadata import (
    METADATA_REFRESH_SECONDS,
    DeclaredInput,
    MetadataFetch,
    MetadataMemory,
    MetadataUnreachable,
    is_infer_path,
)
from caching.backends.open_inference.tensors import Batch, request_batches

__all__ = [
    "METADATA_REFRESH_SECONDS",
    "Batch",
    "DeclaredInput",
    "MetadataFetch",
    "MetadataMemory",
    "MetadataUnreachable",
    "batch_result",
    "is_infer_path",
    "merged_result",
    "request_batches",
]
