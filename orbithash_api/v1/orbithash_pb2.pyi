import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "bits", "class_names", "input_size", "mean", "std", "method", "backbone")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    bits: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    input_size: int
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    method: str
    backbone: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., bits: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ..., input_size: _Optional[int] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., method: _Optional[str] = ..., backbone: _Optional[str] = ...) -> None: ...

class Encoding(_message.Message):
    __slots__ = ("code", "u", "probabilities", "label", "class_name", "thumbnail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    U_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    code: bytes
    u: _containers.RepeatedScalarFieldContainer[float]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    label: int
    class_name: str
    thumbnail: bytes
    def __init__(self, code: _Optional[bytes] = ..., u: _Optional[_Iterable[float]] = ..., probabilities: _Optional[_Iterable[float]] = ..., label: _Optional[int] = ..., class_name: _Optional[str] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "distance", "label", "shard", "score", "metadata", "thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    distance: int
    label: int
    shard: int
    score: float
    metadata: SceneMetadata
    thumbnail: bytes
    def __init__(self, id: _Optional[str] = ..., distance: _Optional[int] = ..., label: _Optional[int] = ..., shard: _Optional[int] = ..., score: _Optional[float] = ..., metadata: _Optional[_Union[SceneMetadata, _Mapping]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class GeoPoint(_message.Message):
    __slots__ = ("lon", "lat")
    LON_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    lon: float
    lat: float
    def __init__(self, lon: _Optional[float] = ..., lat: _Optional[float] = ...) -> None: ...

class BoundingBox(_message.Message):
    __slots__ = ("west", "south", "east", "north")
    WEST_FIELD_NUMBER: _ClassVar[int]
    SOUTH_FIELD_NUMBER: _ClassVar[int]
    EAST_FIELD_NUMBER: _ClassVar[int]
    NORTH_FIELD_NUMBER: _ClassVar[int]
    west: float
    south: float
    east: float
    north: float
    def __init__(self, west: _Optional[float] = ..., south: _Optional[float] = ..., east: _Optional[float] = ..., north: _Optional[float] = ...) -> None: ...

class SceneMetadata(_message.Message):
    __slots__ = ("acquired", "center", "footprint", "sensor", "platform", "source_uri", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACQUIRED_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    FOOTPRINT_FIELD_NUMBER: _ClassVar[int]
    SENSOR_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    acquired: _timestamp_pb2.Timestamp
    center: GeoPoint
    footprint: BoundingBox
    sensor: str
    platform: str
    source_uri: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, acquired: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., center: _Optional[_Union[GeoPoint, _Mapping]] = ..., footprint: _Optional[_Union[BoundingBox, _Mapping]] = ..., sensor: _Optional[str] = ..., platform: _Optional[str] = ..., source_uri: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchFilter(_message.Message):
    __slots__ = ("acquired_from", "acquired_until", "intersects", "center_within", "sensors", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACQUIRED_FROM_FIELD_NUMBER: _ClassVar[int]
    ACQUIRED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    INTERSECTS_FIELD_NUMBER: _ClassVar[int]
    CENTER_WITHIN_FIELD_NUMBER: _ClassVar[int]
    SENSORS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    acquired_from: _timestamp_pb2.Timestamp
    acquired_until: _timestamp_pb2.Timestamp
    intersects: BoundingBox
    center_within: BoundingBox
    sensors: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, acquired_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acquired_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., intersects: _Optional[_Union[BoundingBox, _Mapping]] = ..., center_within: _Optional[_Union[BoundingBox, _Mapping]] = ..., sensors: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("image", "code", "id", "k", "max_distance", "label", "rerank", "rerank_candidates", "filter", "with_metadata", "with_thumbnails")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    RERANK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_METADATA_FIELD_NUMBER: _ClassVar[int]
    WITH_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    code: bytes
    id: str
    k: int
    max_distance: int
    label: int
    rerank: bool
    rerank_candidates: int
    filter: SearchFilter
    with_metadata: bool
    with_thumbnails: bool
    def __init__(self, image: _Optional[bytes] = ..., code: _Optional[bytes] = ..., id: _Optional[str] = ..., k: _Optional[int] = ..., max_distance: _Optional[int] = ..., label: _Optional[int] = ..., rerank: _Optional[bool] = ..., rerank_candidates: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., with_metadata: _Optional[bool] = ..., with_thumbnails: _Optional[bool] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("image", "code", "id")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    code: bytes
    id: str
    def __init__(self, image: _Optional[bytes] = ..., code: _Optional[bytes] = ..., id: _Optional[str] = ...) -> None: ...

class SearchManyRequest(_message.Message):
    __slots__ = ("queries", "k", "max_distance", "label", "rerank", "rerank_candidates", "filter", "with_metadata", "with_thumbnails")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    RERANK_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_METADATA_FIELD_NUMBER: _ClassVar[int]
    WITH_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    k: int
    max_distance: int
    label: int
    rerank: bool
    rerank_candidates: int
    filter: SearchFilter
    with_metadata: bool
    with_thumbnails: bool
    def __init__(self, queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ..., k: _Optional[int] = ..., max_distance: _Optional[int] = ..., label: _Optional[int] = ..., rerank: _Optional[bool] = ..., rerank_candidates: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., with_metadata: _Optional[bool] = ..., with_thumbnails: _Optional[bool] = ...) -> None: ...

class SearchManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class GetItemsRequest(_message.Message):
    __slots__ = ("ids", "with_thumbnails")
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    with_thumbnails: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., with_thumbnails: _Optional[bool] = ...) -> None: ...

class StoredItem(_message.Message):
    __slots__ = ("id", "code", "label", "shard", "metadata", "thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: bytes
    label: int
    shard: int
    metadata: SceneMetadata
    thumbnail: bytes
    def __init__(self, id: _Optional[str] = ..., code: _Optional[bytes] = ..., label: _Optional[int] = ..., shard: _Optional[int] = ..., metadata: _Optional[_Union[SceneMetadata, _Mapping]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class GetItemsResponse(_message.Message):
    __slots__ = ("items", "missing")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class MetadataUpdate(_message.Message):
    __slots__ = ("id", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: SceneMetadata
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[_Union[SceneMetadata, _Mapping]] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[MetadataUpdate]
    def __init__(self, updates: _Optional[_Iterable[_Union[MetadataUpdate, _Mapping]]] = ...) -> None: ...

class UpdateMetadataResponse(_message.Message):
    __slots__ = ("updated", "missing")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    updated: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, updated: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "query", "partial", "failed_shards", "model_version")
    HITS_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    query: Encoding
    partial: bool
    failed_shards: _containers.RepeatedScalarFieldContainer[int]
    model_version: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., query: _Optional[_Union[Encoding, _Mapping]] = ..., partial: _Optional[bool] = ..., failed_shards: _Optional[_Iterable[int]] = ..., model_version: _Optional[str] = ...) -> None: ...

class IngestItem(_message.Message):
    __slots__ = ("id", "image", "label", "metadata")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    label: int
    metadata: SceneMetadata
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., label: _Optional[int] = ..., metadata: _Optional[_Union[SceneMetadata, _Mapping]] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("ingested", "replaced", "per_shard", "received", "failed_shards", "uncertain_shards")
    INGESTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    PER_SHARD_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAIN_SHARDS_FIELD_NUMBER: _ClassVar[int]
    ingested: int
    replaced: int
    per_shard: _containers.RepeatedScalarFieldContainer[int]
    received: int
    failed_shards: _containers.RepeatedScalarFieldContainer[int]
    uncertain_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ingested: _Optional[int] = ..., replaced: _Optional[int] = ..., per_shard: _Optional[_Iterable[int]] = ..., received: _Optional[int] = ..., failed_shards: _Optional[_Iterable[int]] = ..., uncertain_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "missing")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard", "address", "count", "healthy")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    shard: int
    address: str
    count: int
    healthy: bool
    def __init__(self, shard: _Optional[int] = ..., address: _Optional[str] = ..., count: _Optional[int] = ..., healthy: _Optional[bool] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model", "shards", "total")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    total: int
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("images", "thumbnail_size")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_SIZE_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    thumbnail_size: int
    def __init__(self, images: _Optional[_Iterable[bytes]] = ..., thumbnail_size: _Optional[int] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("encodings", "model_version")
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    encodings: _containers.RepeatedCompositeFieldContainer[Encoding]
    model_version: str
    def __init__(self, encodings: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "code", "label", "metadata", "thumbnail")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: bytes
    label: int
    metadata: SceneMetadata
    thumbnail: bytes
    def __init__(self, id: _Optional[str] = ..., code: _Optional[bytes] = ..., label: _Optional[int] = ..., metadata: _Optional[_Union[SceneMetadata, _Mapping]] = ..., thumbnail: _Optional[bytes] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("items", "bits", "model_version")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    bits: int
    model_version: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., bits: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("added", "replaced")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    added: int
    replaced: int
    def __init__(self, added: _Optional[int] = ..., replaced: _Optional[int] = ...) -> None: ...

class ShardSearchRequest(_message.Message):
    __slots__ = ("codes", "k", "max_distance", "label", "bits", "model_version", "u", "candidates", "filter", "with_metadata", "with_thumbnails", "packed")
    CODES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    U_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_METADATA_FIELD_NUMBER: _ClassVar[int]
    WITH_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    codes: _containers.RepeatedScalarFieldContainer[bytes]
    k: int
    max_distance: int
    label: int
    bits: int
    model_version: str
    u: _containers.RepeatedScalarFieldContainer[float]
    candidates: int
    filter: SearchFilter
    with_metadata: bool
    with_thumbnails: bool
    packed: bool
    def __init__(self, codes: _Optional[_Iterable[bytes]] = ..., k: _Optional[int] = ..., max_distance: _Optional[int] = ..., label: _Optional[int] = ..., bits: _Optional[int] = ..., model_version: _Optional[str] = ..., u: _Optional[_Iterable[float]] = ..., candidates: _Optional[int] = ..., filter: _Optional[_Union[SearchFilter, _Mapping]] = ..., with_metadata: _Optional[bool] = ..., with_thumbnails: _Optional[bool] = ..., packed: _Optional[bool] = ...) -> None: ...

class HitList(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class PackedHits(_message.Message):
    __slots__ = ("shard", "ids", "id_ends", "distances", "labels", "scores")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ID_ENDS_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    shard: int
    ids: bytes
    id_ends: bytes
    distances: bytes
    labels: bytes
    scores: bytes
    def __init__(self, shard: _Optional[int] = ..., ids: _Optional[bytes] = ..., id_ends: _Optional[bytes] = ..., distances: _Optional[bytes] = ..., labels: _Optional[bytes] = ..., scores: _Optional[bytes] = ...) -> None: ...

class ShardSearchResponse(_message.Message):
    __slots__ = ("results", "packed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HitList]
    packed: _containers.RepeatedCompositeFieldContainer[PackedHits]
    def __init__(self, results: _Optional[_Iterable[_Union[HitList, _Mapping]]] = ..., packed: _Optional[_Iterable[_Union[PackedHits, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("shard", "count", "bits", "model_version", "capacity", "ready")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    shard: int
    count: int
    bits: int
    model_version: str
    capacity: int
    ready: bool
    def __init__(self, shard: _Optional[int] = ..., count: _Optional[int] = ..., bits: _Optional[int] = ..., model_version: _Optional[str] = ..., capacity: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ids", "with_metadata", "with_thumbnails")
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_METADATA_FIELD_NUMBER: _ClassVar[int]
    WITH_THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    with_metadata: bool
    with_thumbnails: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., with_metadata: _Optional[bool] = ..., with_thumbnails: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items", "missing")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...
