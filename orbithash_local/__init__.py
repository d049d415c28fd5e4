"""Running OrbitHash's parts as local processes on loopback (launcher and tests)."""
