"""Index shard service: one process per shard, Redis as the system of record, an in-memory mirror."""
