"""gRPC plumbing shared by every OrbitHash service: server lifecycle, health, reflection,
error mapping and Prometheus metrics. The hashing library never imports this package."""
