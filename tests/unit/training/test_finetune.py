"""Fine-tuning the backbone's tail on cached trunk activations (random weights: no images, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orbithash.models import Backbone, FineTunedBackbone, HashNet
from orbithash.training.config import HeadConfig
from orbithash.training.finetune import encode_pooled, fit_tail


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return Backbone(pretrained=False)


def _activations(backbone: Backbone) -> tuple[dict[str, np.ndarray], np.ndarray]:
    trunk, _ = backbone.split(1)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 6)
    x = torch.from_numpy(rng.standard_normal((18, 3, 64, 64)).astype(np.float32))
    x += torch.from_numpy(labels.astype(np.float32))[:, None, None, None]  # a class signal
    with torch.no_grad():
        a = trunk(x).numpy().astype(np.float16)
    return {"orig": a, "hflip": a[..., ::-1].copy()}, labels


CONFIG = HeadConfig(views=("orig", "hflip"), tail_blocks=1, tail_epochs=3, tail_batch_size=8)


def test_trunk_then_tail_is_the_backbone(backbone: Backbone) -> None:
    x = torch.randn(2, 3, 96, 96)
    for k in (0, 1, 3):
        trunk, tail = backbone.split(k)
        with torch.no_grad():
            torch.testing.assert_close(FineTunedBackbone(trunk, tail)(x), backbone(x), rtol=0, atol=0)
    _, tail = backbone.split(1)
    tail.train()
    assert not tail.training and not tail.bn1.training  # BatchNorm statistics stay frozen


def test_fit_tail_gives_one_network_whose_head_reads_the_tuned_features(backbone: Backbone) -> None:
    acts, labels = _activations(backbone)
    bn_before = backbone.net._bn1.running_mean.clone()
    weight_before = backbone.net._conv_head.weight.clone()
    tuned, head = fit_tail(acts, labels, 16, 3, CONFIG, seed=3, backbone=Backbone(pretrained=False))
    assert head.bits == 16 and tuned.feature_dim == 1280
    # the caller's backbone is untouched; the tuned one moved its weights but not its BN statistics
    torch.testing.assert_close(backbone.net._bn1.running_mean, bn_before, rtol=0, atol=0)
    torch.testing.assert_close(backbone.net._conv_head.weight, weight_before, rtol=0, atol=0)
    net = HashNet(16, 3, backbone=tuned)
    net.head.load_state_dict(head.state_dict())
    with torch.no_grad():
        u_net, logits = net(torch.randn(1, 3, 64, 64))
        u, _ = head(torch.from_numpy(encode_pooled(tuned.tail, acts["orig"])))
    assert u_net.shape == (1, 16) and logits.shape == (1, 3)
    assert torch.isfinite(u).all() and u.abs().mean() > 0.1


def test_fit_tail_is_deterministic_and_resumes_bit_identically(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = Backbone(pretrained=False)
    acts, labels = _activations(base)

    def fresh() -> Backbone:
        b = Backbone(pretrained=False)
        b.load_state_dict(base.state_dict())
        return b

    whole_bb, whole = fit_tail(acts, labels, 8, 3, CONFIG, seed=5, backbone=fresh())
    again_bb, again = fit_tail(acts, labels, 8, 3, CONFIG, seed=5, backbone=fresh())

    class Stop(Exception):
        pass

    def stop_at_2(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    ckpt = tmp_path / "tail.pt"
    with pytest.raises(Stop):
        fit_tail(acts, labels, 8, 3, CONFIG, seed=5, backbone=fresh(), checkpoint=ckpt, on_epoch_end=stop_at_2)
    seen: list[int] = []
    resumed_bb, resumed = fit_tail(acts, labels, 8, 3, CONFIG, seed=5, backbone=fresh(), checkpoint=ckpt,
                                   on_epoch_end=seen.append)
    assert seen == [3]  # only the epoch left ran
    for model, other in [(whole, again), (whole, resumed), (whole_bb, again_bb), (whole_bb, resumed_bb)]:
        for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    _, other = fit_tail(acts, labels, 8, 3, CONFIG, seed=6, backbone=fresh(), checkpoint=ckpt,
                        on_epoch_end=seen.append)  # another seed: the checkpoint is not reused
    assert seen == [3, 1, 2, 3]
    assert not torch.equal(other.hash.weight, whole.hash.weight)


def test_head_config_refuses_unknown_views_and_cuts() -> None:
    with pytest.raises(ValueError, match="views"):
        HeadConfig(views=("orig", "sideways"))
    with pytest.raises(ValueError, match="tail_blocks"):
        HeadConfig(tail_blocks=17)
    assert HeadConfig().tail_blocks == 1  # the default model fine-tunes the last block
