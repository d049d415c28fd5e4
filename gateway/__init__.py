"""Gateway: the public API. Fans searches out to every shard and merges exact global top-k.

``core`` is the data plane on plain types (placement, fan-out, merge, partial answers); ``clients``
reaches the encoder and the shards over gRPC; ``servicer`` and ``convert`` are the public gRPC API.
"""
