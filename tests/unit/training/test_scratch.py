"""From-scratch training of the papers' networks on real (small) image sets, exported and served."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from orbithash.bits import pack_signs
from orbithash.data import Split, load_split
from orbithash.evaluation.baselines import fit_lsh
from orbithash.evaluation.metrics import mean_average_precision
from orbithash.export.runtime import ExportedModel
from orbithash.losses import DHCNNLoss, DSHLoss
from orbithash.model_facts import ModelFacts
from orbithash.models import HashNet
from orbithash.training.result import export_trained
from orbithash.training.scratch import (
    ScratchConfig,
    augment,
    channel_stats,
    decoded_pixels,
    encode_pixels,
    fit_scratch,
    make_backbone,
    train_scratch,
)
from orbithash_local.cli import main

CONFIG = ScratchConfig(epochs=12, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Split:
    """scikit-learn's 8×8 digits (PNG bytes), 1 437 database and 360 query images: decoded to 32×32."""
    import os

    old = os.environ.get("ORBITHASH_DATA_DIR")
    os.environ["ORBITHASH_DATA_DIR"] = str(tmp_path_factory.mktemp("no-data"))  # no ucmerced.zip: digits
    try:
        return load_split(None)
    finally:
        if old is None:
            del os.environ["ORBITHASH_DATA_DIR"]
        else:
            os.environ["ORBITHASH_DATA_DIR"] = old


def test_augment_crops_from_the_padded_image_and_flips() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 256, (16, 3, 6, 6), dtype=np.uint8)
    assert np.array_equal(augment(pixels, rng, 0, False), pixels)
    out = augment(pixels, rng, 2, True)
    assert out.shape == pixels.shape
    padded = np.pad(pixels, ((0, 0), (0, 0), (2, 2), (2, 2)))
    shifted = flipped = 0
    for i in range(len(pixels)):
        candidates = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                      if np.array_equal((lambda c: c[..., ::-1] if f else c)(padded[i, :, dy:dy + 6, dx:dx + 6]),
                                        out[i])]
        assert candidates, f"image {i} is not a crop of its padded copy"
        shifted += all((dy, dx) != (2, 2) for dy, dx, _ in candidates)
        flipped += all(f for _, _, f in candidates)
    assert shifted > 8 and 0 < flipped < 16  # random, not constant


def test_channel_stats_by_hand() -> None:
    pixels = np.zeros((2, 3, 2, 2), np.uint8)
    pixels[0, 0], pixels[1, 0] = 10, 30  # channel 0: mean 20, std 10
    pixels[:, 1] = 7  # channel 1 is constant: std is floored at 1
    pixels[0, 2, 0, 0] = 255
    mean, std = channel_stats(pixels)
    assert mean[:2] == (20.0, 7.0) and std[:2] == (10.0, 1.0)
    assert mean[2] == pytest.approx(255 / 8, abs=0.01)


def test_decoded_pixels_are_cached_and_keyed_by_the_images(digits: Split, tmp_path: Path) -> None:
    first = decoded_pixels(digits.queries[:20], 32, cache_dir=tmp_path, progress=False)
    assert first.shape == (20, 3, 32, 32) and first.dtype == np.uint8 and first.max() == 255
    assert len(list(tmp_path.glob("pixels-32-20-*.npy"))) == 1
    assert np.array_equal(decoded_pixels(digits.queries[:20], 32, cache_dir=tmp_path, progress=False), first)
    decoded_pixels(digits.queries[1:21], 32, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("pixels-32-20-*.npy"))) == 2  # other images, another entry


@pytest.mark.parametrize("loss", [DSHLoss(), DHCNNLoss()], ids=["dsh", "dhcnn"])
def test_dsh_net_from_scratch_beats_lsh_on_pixels_and_serves_the_same_codes(
        digits: Split, tmp_path: Path, loss: torch.nn.Module) -> None:
    result = train_scratch(digits, backbone="dsh-net", bits=16, config=CONFIG, loss=loss, method="dsh",
                           cache_dir=tmp_path, progress=False)
    assert result.facts.input_size == 32 and result.facts.backbone == "dsh-net"
    db = decoded_pixels(digits.database, 32, cache_dir=tmp_path, progress=False)
    queries = decoded_pixels(digits.queries, 32, cache_dir=tmp_path, progress=False)
    db_labels, q_labels = digits.labels("database"), digits.labels("queries")
    raw = db.reshape(len(db), -1).astype(np.float64)
    lsh_hash = fit_lsh(raw, 16)  # random projections of raw pixels through the database mean
    lsh = mean_average_precision(lsh_hash.encode(queries.reshape(len(queries), -1)), q_labels,
                                 lsh_hash.encode(raw), db_labels, bits=16)
    assert result.metrics["map"] > max(0.6, lsh + 0.2), (result.metrics, lsh)
    assert result.metrics["accuracy"] > 0.6  # the classifier is trained even for a pure hashing loss

    facts = export_trained(result, tmp_path / "repo", "digits")
    served = ExportedModel(tmp_path / "repo" / "digits" / "1" / "model.onnx")
    assert served.facts.mean == result.facts.mean and served.facts.input_size == 32
    codes, _ = served.encode([r.data for r in digits.queries[:64]])
    u, _ = encode_pixels(result.model, result.facts, queries[:64])
    assert facts.version == served.facts.version
    margin = np.abs(u) > 1e-3  # a sign can only differ where u is ~0
    assert np.array_equal(np.unpackbits(codes, axis=1)[:, :16][margin], (u > 0)[margin])


def test_an_interrupted_scratch_fit_resumes_to_the_same_weights(digits: Split, tmp_path: Path) -> None:
    pixels = decoded_pixels(digits.database[:256], 32, cache_dir=tmp_path, progress=False)
    labels = digits.labels("database")[:256]
    config = replace(CONFIG, epochs=3)
    mean, std = channel_stats(pixels)

    def fresh() -> tuple[HashNet, ModelFacts]:
        torch.manual_seed(3)
        net, size = make_backbone("dsh-net")
        model = HashNet(16, 10, backbone=net)
        facts = ModelFacts(name="t", version="pending", bits=16, class_names=digits.class_names,
                           input_size=size, mean=mean, std=std)
        return model, facts

    whole_model, facts = fresh()
    whole = fit_scratch(pixels, labels, whole_model, facts, config, DSHLoss(), seed=3)

    class Stop(Exception):
        pass

    def stop_at_1(epoch: int) -> None:
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "scratch.pt"
    model, _ = fresh()
    with pytest.raises(Stop):
        fit_scratch(pixels, labels, model, facts, config, DSHLoss(), seed=3, checkpoint=ckpt, on_epoch_end=stop_at_1)
    seen: list[int] = []
    model, _ = fresh()
    resumed = fit_scratch(pixels, labels, model, facts, config, DSHLoss(), seed=3, checkpoint=ckpt,
                          on_epoch_end=seen.append)
    assert seen == [2, 3]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert pack_signs(encode_pixels(whole, facts, pixels[:8])[0]).shape == (8, 2)


def test_unknown_scratch_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="resnet"):
        make_backbone("resnet")


def test_orbithash_train_runs_a_scratch_config_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for i in range(300):  # an ImageFolder tree of 30 digits per class
        folder = tmp_path / "digits" / f"d{data.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray((data.images[i] * 15).astype(np.uint8)).save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
    config = tmp_path / "scratch.yaml"
    config.write_text(f"method: dhcnn\nbackbone: dsh-net\nbits: 12\ndataset: {tmp_path / 'digits'}\n"
                      "scratch: {epochs: 4, batch_size: 32, lr: 0.003}\n")
    monkeypatch.setenv("ORBITHASH_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["train", "--config", str(config), "--model-repository", str(tmp_path / "repo"),
                 "--checkpoint", str(tmp_path / "ckpt.pt")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["backbone"], line["bits"], line["classes"], line["training"]) == ("dsh-net", 12, 10, line["database"])
    assert line["database"] + line["queries"] == 300 and line["map"] > 0.3
    assert ExportedModel(tmp_path / "repo" / "orbithash" / "1" / "model.onnx").facts.version == line["version"]



@pytest.mark.parametrize("size", [(6, 6), (3, 3), (7, 5), (13, 13), (2, 9)])
def test_adaptive_max_pool_matches_torch_at_any_map_size(size: tuple[int, int]) -> None:
    from orbithash.models.alexnet_spp import AdaptiveMaxPool

    x = torch.randn(2, 3, *size)
    for n in (1, 2, 4, 6):
        torch.testing.assert_close(AdaptiveMaxPool(n)(x), torch.nn.AdaptiveMaxPool2d(n)(x), rtol=0, atol=0)


@pytest.mark.parametrize(("backbone", "size"), [("alexnet-spp", 224), ("alexnet-spp", 128), ("vgg-f", 128)])
def test_the_paper_backbones_export_and_serve_what_torch_computes(backbone: str, size: int, tmp_path: Path) -> None:
    """The served graph (uint8 pixels → ONNX → codes) must equal torch, also where SPP's or VGG-F's
    pooling bins do not divide the conv map (AlexNet's 13×13 conv5 map into 2×2 and 4×4 at 224 px)."""
    from orbithash.export.onnx_export import export_model

    net, size = make_backbone(backbone, size)
    torch.manual_seed(0)
    model = HashNet(16, 3, backbone=net).eval()
    facts = ModelFacts(name="paper", version="pending", bits=16, class_names=["a", "b", "c"], input_size=size,
                       mean=(120.0, 115.0, 100.0), std=(60.0, 58.0, 57.0), method="dhcnn", backbone=backbone)
    export_model(model, facts, tmp_path, "paper")
    served = ExportedModel(tmp_path / "paper" / "1" / "model.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, size, size), dtype=np.uint8)
    u_onnx, logits_onnx = served.infer(pixels)
    u, logits = encode_pixels(model, facts, pixels)
    np.testing.assert_allclose(u_onnx, u, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits_onnx, logits, rtol=1e-4, atol=1e-4)
