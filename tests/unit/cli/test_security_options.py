"""Where the operator commands find TLS files and the token: flags, then environment, then the
local cluster's record; never a token on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from orbithash_cli import UsageError, commands


def args(**given: str | None) -> argparse.Namespace:
    base = {"gateway": None, "tls_ca": None, "tls_cert": None, "tls_key": None, "token_file": None}
    return argparse.Namespace(**{**base, **given})


@pytest.fixture()
def local_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("ORBITHASH_GATEWAY", "ORBITHASH_TOKEN", "ORBITHASH_TLS_CA", "ORBITHASH_TLS_CERT", "ORBITHASH_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "admin.token").write_text("ohk_local-admin\n")
    state = tmp_path / commands.CLUSTER_STATE
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"endpoints": {"gateway": "127.0.0.1:4242"},
                                 "security": {"tls_ca": "/x/ca.pem", "token_file": str(tmp_path / "admin.token")}}))
    return tmp_path


def test_the_local_cluster_record_supplies_ca_and_admin_token(local_cluster: Path) -> None:
    assert commands.security_options(args()) == {"tls_ca": "/x/ca.pem", "tls_cert": None, "tls_key": None,
                                                 "token": "ohk_local-admin"}


def test_flags_then_environment_win_over_the_record(local_cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (local_cluster / "mine.token").write_text("ohk_mine")
    monkeypatch.setenv("ORBITHASH_TOKEN", "ohk_from_env")
    monkeypatch.setenv("ORBITHASH_TLS_CA", "/env/ca.pem")
    assert commands.security_options(args())["token"] == "ohk_from_env"
    assert commands.security_options(args())["tls_ca"] == "/env/ca.pem"
    chosen = commands.security_options(args(token_file=str(local_cluster / "mine.token"), tls_ca="/flag/ca.pem"))
    assert (chosen["token"], chosen["tls_ca"]) == ("ohk_mine", "/flag/ca.pem")


def test_another_gateway_does_not_get_the_local_clusters_token(local_cluster: Path) -> None:
    assert commands.security_options(args(gateway="10.0.0.5:443"))["token"] is None


def test_an_unreadable_token_file_is_a_usage_error(local_cluster: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the token file"):
        commands.security_options(args(token_file=str(local_cluster / "nope")))


def test_no_command_takes_a_token_as_an_argument(capsys: pytest.CaptureFixture[str]) -> None:
    parser = commands.build_parser()
    for name in ("ingest", "search", "get", "delete", "info", "loadtest"):
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--token", "ohk_secret"])
        err = capsys.readouterr().err
        assert "not taken on the command line" in err and "ohk_secret" not in err


def test_a_tls_file_that_is_missing_or_no_pem_is_named_by_its_option(tmp_path: Path) -> None:
    from orbithash_cli.remote import connect

    with pytest.raises(UsageError, match=r"--tls-ca: cannot read .*nofile\.pem: No such file or directory"):
        connect("127.0.0.1:1", tls_ca=str(tmp_path / "nofile.pem"))
    token = tmp_path / "reader.token"
    token.write_text("ohk_x\n")
    with pytest.raises(UsageError, match=r"--tls-ca .*reader\.token holds no PEM certificate"):
        connect("127.0.0.1:1", tls_ca=str(token))
    with pytest.raises(UsageError, match=r"plaintext to 10\.0\.0\.5:1: pass --tls-ca PEM for TLS"):
        connect("10.0.0.5:1", token="ohk_x")


def test_the_token_file_help_says_the_variable_holds_the_token_itself() -> None:
    helps = {a.dest: a.help for a in commands.build_parser()._subparsers._group_actions[0].choices["info"]._actions}
    assert "$ORBITHASH_TOKEN" in helps["token_file"] and "the token itself" in helps["token_file"]
