"""The OrbitHash Python client: search, ingest and manage a cluster through its gateway.

Needs only grpcio and protobuf (``pip install orbithash[client]``); never torch, numpy or the
hashing library::

    from orbithash_client import Filter, Item, Metadata, OrbitHashClient

    with OrbitHashClient("127.0.0.1:50051") as client:   # TLS: ca_file=..., token=...
        client.ingest([Item("scene-1", "scene-1.tif", metadata=Metadata(sensor="MSI"))])
        for hit in client.search(image="query.jpg", k=5, filter=Filter(sensors=("MSI",))):
            print(hit.id, hit.distance)

See ``docs/client.md``.
"""

from orbithash_client.client import OrbitHashClient
from orbithash_client.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OrbitHashClientError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from orbithash_client.retry import Retry
from orbithash_client.types import (
    BoundingBox,
    DeleteResult,
    Encoding,
    Filter,
    GeoPoint,
    GetResult,
    Hit,
    Info,
    IngestSummary,
    Item,
    Metadata,
    ModelInfo,
    Query,
    SearchResult,
    ShardInfo,
    StoredItem,
    UpdateResult,
)

__all__ = [
    "BoundingBox",
    "DeadlineExceeded",
    "DeleteResult",
    "Encoding",
    "FailedPrecondition",
    "Filter",
    "GeoPoint",
    "GetResult",
    "Hit",
    "Info",
    "IngestSummary",
    "Internal",
    "InvalidArgument",
    "Item",
    "Metadata",
    "ModelInfo",
    "NotFound",
    "OrbitHashClient",
    "OrbitHashClientError",
    "PermissionDenied",
    "Query",
    "ResourceExhausted",
    "Retry",
    "SearchResult",
    "ShardInfo",
    "StoredItem",
    "Unauthenticated",
    "Unavailable",
    "UpdateResult",
]
