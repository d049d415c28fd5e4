"""Operator commands for a ground station: ``orbithash ingest | search | get | delete | info``.

They talk to a running cluster's gateway through the Python client (``orbithash_client``) and
need only what a client install has, plus Pillow (image previews, EXIF, the mosaic) and tqdm (the
progress bar): never torch, ONNX or the hashing library. ``orbithash_cli.commands`` holds the
argument definitions (standard library only, so building the ``orbithash`` parser stays cheap); each
command's module is imported when that command runs.

Exit codes every command keeps (``docs/ground-station.md``):

- 0 ``OK``: everything asked for was done;
- 1 ``INCOMPLETE``: done, except what was reported (bad files skipped, ids not found, a partial
  answer, an unhealthy shard), or the gateway failed (FAILED_PRECONDITION, INTERNAL);
- 2 ``USAGE``: the command line or an input file (a sidecar) is wrong, or the gateway refused the
  request as it is (INVALID_ARGUMENT, RESOURCE_EXHAUSTED); nothing changed;
- 3 ``UNREACHABLE``: the gateway cannot be reached (a resumable ingest keeps its journal);
- 130 ``INTERRUPTED``: stopped by Ctrl-C (an ingest keeps its journal and resumes).
"""

from __future__ import annotations

OK = 0
INCOMPLETE = 1
USAGE = 2
UNREACHABLE = 3
INTERRUPTED = 130


class CliError(Exception):
    """A failure the command reports in one line and ends with ``exit_code``."""

    exit_code = INCOMPLETE


class UsageError(CliError):
    """The command line or an input file is wrong; nothing was sent to the gateway."""

    exit_code = USAGE


class GatewayUnreachable(CliError):
    """The gateway did not answer (connection refused, name not resolved, deadline, network loss)."""

    exit_code = UNREACHABLE
