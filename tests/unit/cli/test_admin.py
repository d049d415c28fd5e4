"""`orbithash get | delete | info` against a fake client; the gateway's address and the exit codes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from unit.cli.cli_support import FakeClient

from orbithash_cli import commands
from orbithash_cli.remote import cli_error
from orbithash_client import FailedPrecondition, InvalidArgument, Item, Metadata, NotFound, ShardInfo, Unavailable


@pytest.fixture()
def stocked(client: FakeClient) -> FakeClient:
    client.stored = {"a": Item("a", b"", 2, Metadata(acquired=datetime(2024, 1, 2, tzinfo=UTC), sensor="MSI",
                                                      center=(10.0, -20.0), attributes={"orbit": "5"})),
                     "b": Item("b", b"", None)}
    return client


def test_get_prints_stored_items_and_names_the_missing(stocked: FakeClient, run, capsys, tmp_path: Path) -> None:
    assert run("get", "a", "b") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "shard", "class", "acquired", "place", "sensor", "platform", "attributes"]
    assert lines[2].split() == ["a", "0", "forest", "2024-01-02T00:00:00Z", "20.0000S", "10.0000E", "MSI", "orbit=5"]
    assert lines[3].split() == ["b", "0", "(none)"]
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n\nzzz\n")
    assert run("get", "--ids-from", str(ids), "--json") == 1
    document = json.loads(capsys.readouterr().out)
    assert document["missing"] == ["zzz"] and document["items"][0]["sensor"] == "MSI"
    assert document["items"][0]["code"] == "abababab" and document["items"][0]["class_name"] == "forest"
    assert run("get") == 2


def test_delete_asks_first_unless_yes(stocked: FakeClient, run, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal: refuse without --yes
    assert run("delete", "a") == 2 and "add --yes" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run("delete", "a") == 1 and "a" in stocked.stored
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run("delete", "a") == 0 and "a" not in stocked.stored
    assert run("delete", "b", "gone", "--yes", "--json") == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"deleted": 1, "missing": ["gone"]}


def test_info_shows_model_shards_and_health(stocked: FakeClient, run, capsys, monkeypatch) -> None:
    assert run("info") == 0
    out = capsys.readouterr().out
    assert "model    orbithash version v1, 32 bits, dhcnn on efficientnet-lite0" in out
    assert "classes  3: airplane, beach, forest" in out and "items    2 in 1 shard(s)" in out
    assert run("info", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["total"] == 2 and document["healthy"] and document["shards"][0]["count"] == 2
    original = FakeClient.info.__get__(stocked)

    def unhealthy():
        info = original()
        return type(info)(info.model, (*info.shards, ShardInfo(1, "s1", 0, False)), info.total)

    monkeypatch.setattr(stocked, "info", unhealthy)
    assert run("info") == 1 and "UNHEALTHY" in capsys.readouterr().out
    stocked.unreachable = True
    monkeypatch.setattr(stocked, "info", original)
    assert run("info") == 3


def test_client_errors_map_to_exit_codes() -> None:
    assert cli_error(InvalidArgument("bad k", grpc.StatusCode.INVALID_ARGUMENT)).exit_code == 2
    assert cli_error(NotFound("no such id", grpc.StatusCode.NOT_FOUND)).exit_code == 1
    assert "FAILED_PRECONDITION" in str(cli_error(FailedPrecondition("64 bits", grpc.StatusCode.FAILED_PRECONDITION)))


def test_the_gateway_address_comes_from_the_flag_the_environment_or_orbithash_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(commands.GATEWAY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(commands.UsageError, match="--gateway HOST:PORT"):
        commands.resolve_gateway(None)
    state = tmp_path / commands.CLUSTER_STATE
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"endpoints": {"gateway": "127.0.0.1:4242"}}))
    assert commands.resolve_gateway(None) == "127.0.0.1:4242"
    monkeypatch.setenv(commands.GATEWAY_ENV, "gs:1")
    assert commands.resolve_gateway(None) == "gs:1"
    assert commands.resolve_gateway("given:2") == "given:2"


def test_ids_that_are_not_utf8_are_a_usage_error(stocked: FakeClient, run, capsys, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"a\n\xff\xfeb\n")
    assert run("get", "--ids-from", str(ids)) == 2
    err = capsys.readouterr().err
    assert str(ids) in err and "UTF-8" in err and "line 2" in err
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"\xffa\n"), encoding="utf-8"))
    assert run("get", "--ids-from", "-") == 2
    assert "standard input" in capsys.readouterr().err


def test_ctrl_d_at_the_delete_prompt_deletes_nothing(stocked: FakeClient, run, capsys,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def end_of_input(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", end_of_input)
    assert run("delete", "a") == 1
    assert "a" in stocked.stored and "nothing deleted" in capsys.readouterr().err


@pytest.mark.parametrize(("grpc_message", "advice"), [
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: "
     "Connection refused", "nothing listens there"),
    ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5: Tls handshake failed "
     "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
     "not signed by the CA given"),
])
def test_an_unreachable_gateway_says_what_to_check(grpc_message: str, advice: str) -> None:
    error = cli_error(Unavailable(grpc_message, grpc.StatusCode.UNAVAILABLE))
    assert error.exit_code == 3 and advice in str(error)


def test_no_recorded_cluster_says_how_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(commands.GATEWAY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(commands.UsageError, match=r"start one here with `orbithash up`"):
        commands.resolve_gateway(None)
