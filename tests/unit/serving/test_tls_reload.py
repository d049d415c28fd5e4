"""When the served certificate is read again: on any change of the files' bytes (no gRPC server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orbithash_local.pki import CertificateAuthority
from orbithash_serving import tls


def test_a_file_changed_within_one_timestamp_tick_is_still_read_again(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The modification time was read before the bytes: a file caught half-written, then finished
    within the same tick, kept the half (refused by gRPC) and the new certificate was never served."""
    monkeypatch.setattr(tls, "RELOAD_CHECK_S", 0.0)
    served = CertificateAuthority(tmp_path / "ca").issue("encoder", tmp_path / "served", ("localhost",))
    renewed = CertificateAuthority(tmp_path / "ca-2").issue("encoder", tmp_path / "renewed", ("localhost",))
    reloading = tls.ReloadingServerCertificate(str(served.cert), str(served.key), None, False)
    assert reloading.fetch() is None  # nothing changed
    stamp = served.cert.stat().st_mtime_ns
    full = renewed.cert.read_bytes()
    served.key.write_bytes(renewed.key.read_bytes())
    os.utime(served.key, ns=(stamp, stamp))
    served.cert.write_bytes(full[: len(full) // 2])  # caught half-written
    os.utime(served.cert, ns=(stamp, stamp))
    assert reloading.fetch() is not None
    served.cert.write_bytes(full)  # finished within the same tick
    os.utime(served.cert, ns=(stamp, stamp))
    assert reloading.fetch() is not None, "the finished certificate was never read"
    assert reloading.fetch() is None
