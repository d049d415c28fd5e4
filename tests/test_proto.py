"""The committed generated code must match what proto/ generates today."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh() -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for name, text in gen.generated_files().items():
        committed = (REPO / "orbithash" / "v1" / name).read_text()
        assert committed == text, f"orbithash/v1/{name} is stale: run python scripts/gen_proto.py"
