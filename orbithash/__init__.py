"""OrbitHash: deep-hashing image retrieval for remote-sensing imagery.

The top-level package is the hashing library (data, models, losses, training, evaluation, export,
bit codes and Hamming search). It imports neither gRPC nor Redis: the services in
``encoder_service``, ``index_service`` and ``gateway`` are thin adapters over it.
``orbithash_api.v1`` holds the code generated from ``proto/`` and ``orbithash_serving`` the shared
gRPC plumbing; the hashing modules never import either.
"""

__version__ = "0.1.0"


class OrbitHashError(Exception):
    """Root of every error OrbitHash raises on purpose."""


class InvalidInput(OrbitHashError):
    """The caller sent something unusable (maps to INVALID_ARGUMENT)."""


class NotFound(OrbitHashError):
    """A named item does not exist (maps to NOT_FOUND)."""


class Mismatch(OrbitHashError):
    """Codes of another bit length or model version (maps to FAILED_PRECONDITION)."""


class Unavailable(OrbitHashError):
    """A dependency (Triton, Redis, a shard) cannot be reached (maps to UNAVAILABLE)."""


class NotSent(Unavailable):
    """A dependency could not be reached at all: the request never left this process, so it
    certainly changed nothing there (maps to UNAVAILABLE)."""


class DeadlineExceeded(Unavailable):
    """The caller's deadline passed before the work was done; nothing of it was applied
    (maps to DEADLINE_EXCEEDED). A kind of Unavailable: to a fan-out it is a late shard."""


class Cancelled(OrbitHashError):
    """The caller went away before the work was done, so it was stopped (maps to CANCELLED)."""


class ResourceExhausted(OrbitHashError):
    """A request asks for more than the service allows (maps to RESOURCE_EXHAUSTED)."""


class TritonFailure(OrbitHashError):
    """The inference server answered with an error of its own (maps to INTERNAL, with the cause)."""
