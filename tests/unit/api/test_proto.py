"""The committed generated code must match what proto/ generates today."""

import importlib.util

from support import REPO


def test_generated_code_is_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, text in gen.generated_files().items():
        committed = (REPO / "orbithash_api" / "v1" / name).read_text()
        assert committed == text, f"orbithash_api/v1/{name} is stale: run python scripts/gen_proto.py"
