"""Write the Kubernetes Secrets that deploy/k8s/base references: certificates, tokens, Redis ACL.

No key material is checked in: this script makes it. Run it once per cluster and keep OUT_DIR
private (it holds the CA key, the Redis passwords and the state that the next run reuses):

    .venv/bin/python deploy/k8s/make_secrets.py deploy/k8s/secrets.local --admin-token ops
    kubectl apply -f deploy/k8s/base/namespace.yaml
    kubectl apply -f deploy/k8s/secrets.local/secrets.yaml

(``deploy/k8s/secrets.local/`` is ignored by git.) What it writes, all in namespace ``orbithash``:

| Secret | type | keys | mounted by |
|---|---|---|---|
| ``orbithash-ca`` | Opaque | ``ca.crt`` | the Ingress controller (verifies the gateway) |
| ``orbithash-<member>-tls`` | kubernetes.io/tls | ``tls.crt``, ``tls.key``, ``ca.crt`` | each member |
| ``orbithash-gateway-public-tls`` | kubernetes.io/tls | ``tls.crt``, ``tls.key`` | the Ingress (public name) |
| ``orbithash-gateway-tokens`` | Opaque | ``tokens.json`` (SHA-256 of each token) | gateway |
| ``orbithash-redis-acl`` | Opaque | ``users.acl`` (hashed passwords), ``probe-password`` | redis |
| ``orbithash-redis-shards`` | Opaque | ``shard-N`` (password of Redis user ``shard-N``) | index shards |

Certificates come from :func:`orbithash_local.pki.cluster_pki` (a CA and one EC certificate per
member; its common name is the identity ``allowed_peers`` checks). The StatefulSet's shards share
the one identity ``index``, whose certificate names every shard pod. Each member's certificate
also names the cluster DNS names the others dial (``orbithash-encoder``, ``triton``,
``orbithash-index-N.orbithash-index``, ...), since clients verify the host name they dial.

Running again reuses the CA, the still-valid certificates, the Redis passwords and the tokens
from OUT_DIR; ``--renew-certs``, ``--rotate-redis-passwords`` and ``--admin-token`` change them
(deploy/README.md: rotation without downtime).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from orbithash_local.pki import cluster_pki  # noqa: E402
from orbithash_local.redis_server import DEFAULT_USER_ACL, shard_acl  # noqa: E402  (the launcher's rules)
from orbithash_serving.private_files import write_private  # noqa: E402

ROLES = ("reader", "writer", "admin")
STATE = "state.json"
# Commands a shard needs: its Lua scripts (EVALSHA, SCRIPT LOAD/EXISTS as redis-py sends them) and
# the reads and writes those scripts make, PING for readiness, TIME inside the upsert script.

def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def dns_names(service: str, namespace: str, pods: list[str] = ()) -> tuple[str, ...]:
    """The names a client in the cluster may dial for ``service`` (and its pods, for a headless one)."""
    names = []
    for host in [service, *(f"{p}.{service}" for p in pods)]:
        names += [host, f"{host}.{namespace}", f"{host}.{namespace}.svc", f"{host}.{namespace}.svc.cluster.local"]
    return tuple(names)


def members(shards: int, namespace: str) -> dict[str, tuple[str, ...]]:
    """Identity name -> the DNS names its certificate carries."""
    return {
        "gateway": dns_names("orbithash-gateway", namespace),
        "encoder": dns_names("orbithash-encoder", namespace),
        "index": dns_names("orbithash-index", namespace, [f"orbithash-index-{i}" for i in range(shards)]),
        "triton": dns_names("triton", namespace),
        "redis": dns_names("orbithash-redis", namespace, ["orbithash-redis-0"]),
    }


def redis_acl(passwords: dict[str, str], previous: dict[str, list[str]], key_prefix: str) -> str:
    """The ACL file: default user off, one user per shard on its own keys, a probe user for PING.
    Passwords only as ``#<sha256>``; ``previous`` hashes stay valid during a rotation."""
    lines = [DEFAULT_USER_ACL]  # Redis allows no comments here
    for user, password in sorted(passwords.items()):
        hashes = " ".join(f"#{h}" for h in [sha256_hex(password), *previous.get(user, [])])
        if user == "probe":
            lines.append(f"user probe on {hashes} resetkeys resetchannels -@all +ping")
        else:
            lines.append(f"user {user} on {hashes} {shard_acl(key_prefix, int(user.removeprefix('shard-')))}")
    return "\n".join(lines) + "\n"


def secret(name: str, namespace: str, data: dict[str, str], kind: str = "Opaque") -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": kind,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "orbithash"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def load_state(out: Path) -> dict:
    path = out / STATE
    return json.loads(path.read_text()) if path.exists() else {"redis": {}, "previous": {}, "tokens": []}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="private output folder (CA, state, secrets.yaml); reused by later runs")
    p.add_argument("--namespace", default="orbithash")
    p.add_argument("--shards", type=int, default=2, help="index shards (= the StatefulSet's replicas)")
    p.add_argument("--public-host", action="append", default=None,
                   help="public name(s) of the gateway's Ingress (default orbithash.example.com)")
    p.add_argument("--key-prefix", default="orbithash",
                   help="the shards' ORBITHASH_INDEX_NAMESPACE: their Redis keys are <prefix>:{shard-N}:*")
    p.add_argument("--admin-token", metavar="NAME", help="add a bearer token of role --role; printed once")
    p.add_argument("--role", choices=ROLES, default="admin")
    p.add_argument("--expires", help="the token's expiry, e.g. 2027-06-01T00:00:00Z")
    p.add_argument("--revoke-token", metavar="NAME", action="append", default=[], help="drop a token by name")
    p.add_argument("--renew-certs", action="store_true", help="new member certificates from the same CA")
    p.add_argument("--rotate-redis-passwords", action="store_true",
                   help="new shard passwords; the ACL keeps accepting the old ones until the next run")
    p.add_argument("--stdout", action="store_true", help="print the Secrets instead of writing secrets.yaml")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be at least 1")
    if args.expires:
        dt.datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    pki_dir = out / "pki"
    ns = args.namespace
    state = load_state(out)

    # -- certificates ---------------------------------------------------------------------------
    if args.renew_certs and pki_dir.exists():
        for leaf in pki_dir.glob("*.pem"):
            if leaf.name != "ca.pem":
                leaf.unlink()
                leaf.with_suffix(".key").unlink(missing_ok=True)
    identities = {}
    for name, hosts in members(args.shards, ns).items():
        identities.update(cluster_pki(pki_dir, [name], hosts))
    public_hosts = tuple(args.public_host or ["orbithash.example.com"])
    identities.update(cluster_pki(pki_dir, ["gateway-public"], public_hosts))
    ca = identities["gateway"].ca.read_text()

    docs = [secret("orbithash-ca", ns, {"ca.crt": ca})]
    for name, ident in identities.items():
        data = {"tls.crt": ident.cert.read_text(), "tls.key": ident.key.read_text()}
        if name != "gateway-public":
            data["ca.crt"] = ca
        docs.append(secret(f"orbithash-{name}-tls", ns, data, "kubernetes.io/tls"))

    # -- gateway tokens -------------------------------------------------------------------------
    tokens = [t for t in state["tokens"] if t["name"] not in set(args.revoke_token)]
    new_token = None
    if args.admin_token:
        if any(t["name"] == args.admin_token for t in tokens):
            raise SystemExit(f"a token named {args.admin_token!r} exists; revoke it first (--revoke-token)")
        new_token = secrets.token_urlsafe(32)
        entry = {"name": args.admin_token, "role": args.role, "sha256": sha256_hex(new_token)}
        if args.expires:
            entry["expires"] = args.expires
        tokens.append(entry)
    state["tokens"] = tokens
    docs.append(secret("orbithash-gateway-tokens", ns, {"tokens.json": json.dumps({"tokens": tokens}, indent=2)}))

    # -- Redis ACL and passwords ----------------------------------------------------------------
    users = [f"shard-{i}" for i in range(args.shards)] + ["probe"]
    old = state["redis"]
    previous = {}
    if args.rotate_redis_passwords:
        previous = {u: [sha256_hex(p)] for u, p in old.items() if u in users}
    passwords = {u: (old.get(u) if u in old and not args.rotate_redis_passwords else secrets.token_urlsafe(32))
                 for u in users}
    state["redis"], state["previous"] = passwords, previous
    docs.append(secret("orbithash-redis-acl", ns, {"users.acl": redis_acl(passwords, previous, args.key_prefix),
                                                   "probe-password": passwords["probe"]}))
    docs.append(secret("orbithash-redis-shards", ns, {u: p for u, p in passwords.items() if u != "probe"}))

    write_private(out / STATE, json.dumps(state, indent=2))
    text = "# Generated by deploy/k8s/make_secrets.py: key material, never commit.\n"
    text += yaml.safe_dump_all(docs, sort_keys=False)
    if args.stdout:
        sys.stdout.write(text)
    else:
        write_private(out / "secrets.yaml", text)
        print(f"wrote {out / 'secrets.yaml'}: kubectl apply -f {out / 'secrets.yaml'}", file=sys.stderr)
    if new_token is not None:
        print(f"token {args.admin_token} ({args.role}), shown only now, stored only hashed:\n{new_token}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
