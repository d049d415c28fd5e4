"""Gateway: the public API. Fans searches out to every shard and merges exact global top-k."""
