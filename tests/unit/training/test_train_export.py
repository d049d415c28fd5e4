"""A short real training on a UC Merced subset, exported and served by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from support import REPO
from torch import nn
from tritonclient.grpc import model_config_pb2 as model_config

from orbithash.bits import pack_signs
from orbithash.data import Split
from orbithash.evaluation.baselines import fit_lsh
from orbithash.evaluation.metrics import mean_average_precision
from orbithash.export.onnx_export import export_model, pbtxt_string
from orbithash.export.onnx_facts import exported_facts, load_facts_from_onnx
from orbithash.images import normalise, pixels_batch
from orbithash.model_facts import ModelFacts, ModelFactsError
from orbithash.models import HashNet
from orbithash.training.config import HeadConfig
from orbithash.training.features import backbone_facts, cached_features
from orbithash.training.finetune import train_and_export
from orbithash.training.result import TrainResult

BITS = 32


class Trained:
    def __init__(self, split: Split, result: TrainResult, path: Path, repo: Path, cache: Path) -> None:
        self.split, self.result, self.path, self.repo, self.cache = split, result, path, repo, cache
        self.facts = load_facts_from_onnx(path)
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(self, records: list) -> tuple[np.ndarray, np.ndarray]:
        us, logits = [], []
        for i in range(0, len(records), 16):
            x = pixels_batch([r.data for r in records[i:i + 16]], self.facts)
            u, lg = self.session.run(None, {"images": x})
            us.append(u)
            logits.append(lg)
        return np.concatenate(us), np.concatenate(logits)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, short_training) -> Trained:
    """The suite's shared short training (tests/conftest.py: 32 bits, 16 database + 4 query images
    per class), exported here under another name."""
    assert short_training.result.facts.bits == BITS
    repo = tmp_path_factory.mktemp("repo")
    path = export_model(short_training.result.model, short_training.result.facts, repo, "tiny")
    return Trained(short_training.split, short_training.result, path, repo, short_training.cache)


def test_onnx_outputs_match_the_torch_model(trained: Trained) -> None:
    inputs, outputs = trained.session.get_inputs(), trained.session.get_outputs()
    assert [i.name for i in inputs] == ["images"] and inputs[0].shape[1:] == [3, 224, 224]
    assert inputs[0].type == "tensor(uint8)"
    assert [o.name for o in outputs] == ["u", "logits"]
    x = pixels_batch([r.data for r in trained.split.queries[:3]], trained.facts)  # uint8: normalised in-graph
    with torch.no_grad():
        u_t, logits_t = trained.result.model(torch.from_numpy(normalise(x, trained.facts)))
    u, logits = trained.session.run(None, {"images": x})
    assert u.shape == (3, BITS) and logits.shape == (3, 21)
    np.testing.assert_allclose(u, u_t.numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, logits_t.numpy(), atol=1e-4)
    u1, _ = trained.session.run(None, {"images": x[1:2]})  # the batch size is dynamic
    np.testing.assert_allclose(u1[0], u[1], atol=1e-4)


def test_facts_round_trip_through_onnx_metadata(trained: Trained) -> None:
    facts = trained.facts
    assert (facts.name, facts.bits, facts.input_size) == ("tiny", BITS, 224)
    assert facts.class_names == trained.split.class_names
    assert facts.mean == (127.0, 127.0, 127.0) and facts.std == (128.0, 128.0, 128.0)
    assert len(facts.version) == 12 and int(facts.version, 16) >= 0
    assert ModelFacts.from_params(facts.to_params()) == facts
    assert exported_facts(trained.repo, "tiny") == facts
    assert exported_facts(trained.repo, "absent") is None


def test_triton_config_parses_and_carries_the_facts(trained: Trained) -> None:
    text = (trained.repo / "tiny" / "config.pbtxt").read_text()
    config = text_format.Parse(text, model_config.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("tiny", "python", 64)
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [3, 224, 224])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("u", [BITS]), ("logits", [21])]
    assert [t.data_type for t in config.input] == [model_config.TYPE_UINT8]
    assert all(t.data_type == model_config.TYPE_FP32 for t in config.output)
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 0
    assert config.instance_group[0].kind == model_config.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert ModelFacts.from_params(params) == trained.facts


def test_served_codes_equal_training_codes_and_beat_lsh(trained: Trained) -> None:
    split = trained.split
    db_labels, q_labels = split.labels("database"), split.labels("queries")
    u_db, _ = trained.run(split.database)
    u_q, logits_q = trained.run(split.queries)
    # The served codes are the trained network's own signs (fine-tuned tail included).
    sample = split.database[::7]
    pixels = pixels_batch([r.data for r in sample], trained.facts)
    with torch.no_grad():
        u_train, _ = trained.result.model(torch.from_numpy(normalise(pixels, trained.facts)))
    assert np.mean((u_db[::7] > 0) == (u_train.numpy() > 0)) > 0.999
    feats = cached_features(split, backbone_facts(split, BITS), HeadConfig(tail_blocks=0).views,
                            cache_dir=trained.cache)

    served = mean_average_precision(pack_signs(u_q), q_labels, pack_signs(u_db), db_labels, bits=BITS)
    lsh_hash = fit_lsh(feats.database, BITS)  # random projections through the database mean
    lsh = mean_average_precision(lsh_hash.encode(feats.queries), q_labels, lsh_hash.encode(feats.database),
                                 db_labels, bits=BITS)
    assert served > 0.8 and served > lsh + 0.2, (served, lsh)
    assert served == pytest.approx(trained.result.metrics["map"], abs=0.01)
    assert np.mean(logits_q.argmax(axis=1) == q_labels) > 0.8


def test_same_seed_gives_same_version_and_another_seed_a_new_one(trained: Trained, tmp_path: Path) -> None:
    # A short head-only fit on the pooled features the test above cached: the same determinism
    # (training and export) without fine-tuning three times.
    config = HeadConfig(tail_blocks=0, epochs=3)

    def export(seed: int, repo: Path) -> ModelFacts:
        return train_and_export(trained.split, bits=BITS, repo_dir=repo, model_name="tiny", seed=seed,
                                cache_dir=trained.cache, config=config, progress=False)

    first = export(0, tmp_path / "first")
    again = export(0, tmp_path)
    other = export(1, tmp_path)
    assert again == first
    assert other.version != first.version
    assert exported_facts(tmp_path, "tiny") == other


def test_malformed_or_missing_metadata_is_refused(trained: Trained, tmp_path: Path) -> None:
    proto = onnx.load(str(trained.path))
    for entry in proto.metadata_props:
        if entry.key == "orbithash.bits":
            entry.value = "999"
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    with pytest.raises(ModelFactsError, match="bits"):
        load_facts_from_onnx(tmp_path / "bad.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFactsError):
        load_facts_from_onnx(tmp_path / "bare.onnx")
    with pytest.raises(ModelFactsError):
        load_facts_from_onnx(tmp_path / "absent.onnx")


def test_export_refuses_facts_that_do_not_fit_the_model(tmp_path: Path) -> None:
    model = HashNet(16, 3, backbone=nn.Flatten(), feature_dim=3 * 8 * 8)
    facts = ModelFacts(name="m", version="v", bits=32, class_names=("a", "b", "c"), input_size=8,
                       mean=(0.0,) * 3, std=(1.0,) * 3)
    with pytest.raises(ModelFactsError, match="16 bits"):
        export_model(model, facts, tmp_path, "m")
    assert not (tmp_path / "m").exists()


def test_pbtxt_strings_survive_quotes_backslashes_and_unicode() -> None:
    value = 'Zürich "dock" \\ yard\n\t["a", "b"]'
    text = f"parameters {{ key: \"k\" value: {{ string_value: {pbtxt_string(value)} }} }}"
    config = text_format.Parse(text, model_config.ModelConfig())
    assert config.parameters["k"].string_value == value


# --- configs, the method registry and resumable head fits (synthetic features: no images) -----


def _toy_features() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = rng.standard_normal((3, 16)).astype(np.float32) * 2
    x = centres[labels] + rng.standard_normal((60, 16)).astype(np.float32)
    return {"orig": x, "hflip": x[:, ::-1].copy()}, labels


@pytest.mark.parametrize("method", ["dhcnn", "dsh"])
def test_an_interrupted_fit_resumes_to_the_same_weights(tmp_path: Path, method: str) -> None:
    from orbithash.losses import make_loss
    from orbithash.training.finetune import fit_head

    feats, labels = _toy_features()
    config = HeadConfig(epochs=4, batch_size=16, views=("orig", "hflip"))
    whole = fit_head(feats, labels, 8, 3, config, seed=5, loss=make_loss(method))

    class Stop(Exception):
        pass

    def stop_at_2(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    ckpt = tmp_path / "head.pt"
    with pytest.raises(Stop):
        fit_head(feats, labels, 8, 3, config, seed=5, loss=make_loss(method), checkpoint=ckpt, on_epoch_end=stop_at_2)
    seen: list[int] = []
    resumed = fit_head(feats, labels, 8, 3, config, seed=5, loss=make_loss(method), checkpoint=ckpt,
                       on_epoch_end=seen.append)
    assert seen == [3, 4]  # only the epochs left ran
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    other = fit_head(feats, labels, 8, 3, config, seed=6, loss=make_loss(method), checkpoint=ckpt,
                     on_epoch_end=seen.append)  # another seed: the checkpoint is not reused
    assert seen == [3, 4, 1, 2, 3, 4]
    assert not torch.equal(other.hash.weight, whole.hash.weight)


def test_config_files_load_and_typos_are_refused(tmp_path: Path) -> None:
    from orbithash.losses import DSHLoss
    from orbithash.training.config import ConfigError, load_config

    configs = REPO / "configs"
    for path in sorted(configs.glob("*.yaml")):
        config = load_config(path)
        assert config.make_loss() is not None, path
    dsh = load_config(configs / "ucm_dsh_64.yaml")
    assert isinstance(dsh.make_loss(), DSHLoss) and dsh.bits == 64
    toml = tmp_path / "c.toml"
    toml.write_text('method = "dpsh"\nbits = 32\n[head]\nepochs = 3\nviews = ["orig"]\n')
    loaded = load_config(toml)
    assert (loaded.method, loaded.bits, loaded.head.epochs, loaded.head.views) == ("dpsh", 32, 3, ("orig",))
    for text, match in [("metod: dsh\n", "metod"), ("method: nope\n", "nope"), ("bits: 4\n", "bits"),
                        ("head: {epoch: 3}\n", "epoch"), ("backbone: resnet-50\n", "resnet-50"),
                        ("scratch: {epoch: 3}\n", "epoch")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_config(bad)
    bad_loss = tmp_path / "loss.yaml"
    bad_loss.write_text("method: dsh\nloss: {theta_scale: 2}\n")
    with pytest.raises(ConfigError, match="dsh"):
        load_config(bad_loss).make_loss()


@pytest.mark.parametrize(("backbone", "size"), [("DSHNet", 32), ("AlexNetSPP", 224), ("AlexNetSPP", 160),
                                                ("VGGF", 224)])
def test_paper_backbones_give_codes_and_logits_of_the_right_shape(backbone: str, size: int) -> None:
    from orbithash import models

    net = HashNet(12, 10, backbone=getattr(models, backbone)()).eval()
    with torch.no_grad():
        u, logits = net(torch.rand(2, 3, size, size) * 255)
    assert u.shape == (2, 12) and logits.shape == (2, 10)
    assert torch.isfinite(u).all()


def test_pmt_by_hand() -> None:
    from orbithash.models import PowerMeanTransform

    x = torch.tensor([[[[0.0]], [[3.0]]]])  # 1×2×1×1
    y = PowerMeanTransform(alpha=0.5, beta=1.0)(x)
    torch.testing.assert_close(y.flatten(), torch.tensor([0.0, float(np.log(4.0)), 1.0, 2.0]))
