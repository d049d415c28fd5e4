"""What ``orbithash up --tls`` sets up before it starts anything: a CA and a certificate per member
(``pki/``), and bearer tokens for the three roles (``secrets/``).

The token file the gateway reads holds only hashes; each role's token is also written once, in
clear, to ``secrets/<role>.token`` (mode 0600, like a kubeconfig), so the operator's commands on
this machine work at once and a person can hand a token on. Both survive restarts; ``orbithash
token create|revoke`` changes them while the cluster runs.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from orbithash_local.pki import Identity, cluster_pki
from orbithash_serving.access import Role, TokenEntry, hash_token, new_token, parse_token_file, write_token_file
from orbithash_serving.private_files import write_private

TOKENS_FILE = "tokens.json"


@dataclass(frozen=True)
class LocalSecurity:
    identities: dict[str, Identity]
    tokens_file: Path
    token_files: dict[str, Path]  # role → file holding that role's token in clear (0600)

    @property
    def ca(self) -> Path:
        return next(iter(self.identities.values())).ca

    def identity(self, name: str) -> Identity:
        return self.identities[name]

    def record(self) -> dict[str, object]:
        """What cluster.json says about it (paths only: never a key or a token)."""
        return {"tls_ca": str(self.ca), "token_file": str(self.token_files["admin"]),
                "tokens_file": str(self.tokens_file), "token_files": {k: str(v) for k, v in self.token_files.items()},
                "certificates": {name: str(i.cert) for name, i in self.identities.items()}}


def members(shards: int) -> list[str]:
    """Every certificate the local cluster needs: the services, Redis, Triton, the launcher's own
    probes and the operator's client."""
    return ["gateway", "encoder", *(f"shard-{s}" for s in range(shards)), "triton", "redis", "launcher", "client"]


def prepare(work_dir: Path, shards: int, hosts: tuple[str, ...] = ()) -> LocalSecurity:
    identities = cluster_pki(work_dir / "pki", members(shards), hosts)
    secrets_dir = work_dir.resolve() / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    tokens_file = secrets_dir / TOKENS_FILE
    token_files = {role.label: secrets_dir / f"{role.label}.token" for role in Role}
    entries = parse_token_file(tokens_file.read_text()) if tokens_file.exists() else {}
    changed = False
    for role in Role:
        path = token_files[role.label]
        known = path.exists() and hash_token(path.read_text().strip()) in entries
        if not known:
            token = new_token()
            write_private(path, token + "\n")
            entries[hash_token(token)] = TokenEntry(f"local-{role.label}", role, hash_token(token))
            changed = True
    if changed or not tokens_file.exists():
        write_token_file(tokens_file, list(entries.values()))
    return LocalSecurity(identities, tokens_file, token_files)


def add_token(tokens_file: Path, name: str, role: Role, expires: dt.datetime | None = None) -> str:
    """A new token for ``name`` in the file (its hash only); the token itself is returned once."""
    entries = parse_token_file(tokens_file.read_text()) if tokens_file.exists() else {}
    if any(e.name == name for e in entries.values()):
        raise ValueError(f"a token named {name!r} exists already: revoke it first, or choose another name "
                         "(to rotate: create the new one, move the clients, then revoke the old)")
    token = new_token()
    entries[hash_token(token)] = TokenEntry(name, role, hash_token(token), expires)
    write_token_file(tokens_file, list(entries.values()))
    return token


def revoke_token(tokens_file: Path, name: str) -> int:
    """Remove every token named ``name``; how many went."""
    entries = parse_token_file(tokens_file.read_text())
    kept = [e for e in entries.values() if e.name != name]
    write_token_file(tokens_file, kept)
    return len(entries) - len(kept)
