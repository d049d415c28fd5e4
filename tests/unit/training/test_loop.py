"""The one training loop: batching, the classifier rule, resume with in-network randomness, and the
torch-free configuration names pinned to the registries that build the objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import REPO
from torch import nn

from orbithash.losses import LOSSES, DHCNNLoss, DSHLoss
from orbithash.models import BACKBONE_NAME, HashHead
from orbithash.training import config
from orbithash.training.loop import ParamGroup, batches_per_epoch, fit, step_loss
from orbithash.training.scratch import SCRATCH_NETWORKS


def test_configs_import_without_torch() -> None:
    code = ("import sys, orbithash.training.config as c; c.TrainConfig(); c.HeadConfig(); c.ScratchConfig(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_config_names_are_the_registries_names() -> None:
    assert set(config.METHODS) == set(LOSSES)
    assert set(config.SCRATCH_BACKBONES) == set(SCRATCH_NETWORKS)
    assert config.PRETRAINED_BACKBONE == BACKBONE_NAME


@pytest.mark.parametrize(("n", "batch", "expected"), [(6720, 256, 27), (60, 32, 2), (64, 64, 1), (10, 64, 1),
                                                      (3, 2, 1), (50_000, 128, 391)])
def test_every_item_is_seen_each_epoch_in_batches_of_at_most_the_size_and_at_least_two(
        n: int, batch: int, expected: int) -> None:
    per_epoch = batches_per_epoch(n, batch)
    assert per_epoch == expected
    sizes = [len(b) for b in np.array_split(np.arange(n), per_epoch)]
    assert sum(sizes) == n and min(sizes) >= 2
    assert max(sizes) <= batch or per_epoch == 1


def test_a_pure_hashing_loss_trains_the_classifier_without_shaping_the_codes() -> None:
    torch.manual_seed(0)
    head = HashHead(6, 8, 3)
    features, labels = torch.randn(10, 6), torch.arange(10) % 3
    step_loss(head, features, labels, DSHLoss()).backward()
    assert head.classifier.weight.grad is not None and head.classifier.weight.grad.abs().sum() > 0
    with_classifier = head.hash.weight.grad.clone()
    head.zero_grad()
    DSHLoss()(head.hash(features), labels).backward()  # the hashing loss alone
    torch.testing.assert_close(head.hash.weight.grad, with_classifier, rtol=0, atol=0)
    head.zero_grad()
    step_loss(head, features, labels, DHCNNLoss()).backward()  # a classification term shapes the codes
    head_only = head.hash.weight.grad.clone()
    head.zero_grad()
    DHCNNLoss(eta=0.0)(head.hash(features), labels).backward()
    assert not torch.equal(head_only, head.hash.weight.grad)


def test_a_fit_with_dropout_in_the_network_resumes_bit_identically(tmp_path: Path) -> None:
    """torch's generator (nn.Dropout) is checkpointed beside numpy's (batch order)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 8)
    data = (rng.standard_normal((24, 5)) + labels[:, None]).astype(np.float32)

    def run(**kwargs: object) -> tuple[nn.Module, HashHead]:
        torch.manual_seed(1)
        net, head = nn.Sequential(nn.Linear(5, 16), nn.Dropout(0.5)), HashHead(16, 8, 3)
        fit(data, labels, head, lambda batch, _: net(torch.from_numpy(batch)), DHCNNLoss(),
            modules={"net": net, "head": head}, groups=[ParamGroup([*net.parameters(), *head.parameters()], 1e-2)],
            epochs=4, batch_size=8, weight_decay=0.0, seed=2, **kwargs)
        return net, head

    class Stop(Exception):
        pass

    def stop_at_2(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    whole = run()
    ckpt = tmp_path / "fit.pt"
    with pytest.raises(Stop):
        run(checkpoint=ckpt, on_epoch_end=stop_at_2)
    seen: list[int] = []
    resumed = run(checkpoint=ckpt, on_epoch_end=seen.append)
    assert seen == [3, 4] and [p.name for p in tmp_path.iterdir()] == ["fit.pt"]  # no temporary left
    for a, b in zip(whole, resumed, strict=True):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not whole[0].training and not whole[1].training  # left in eval mode
