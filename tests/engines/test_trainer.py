from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn
from torch.utils.data import DataLoader

from crossmatch_ext.engines import CrossMatchLoader, CrossMatchTrainer
from crossmatch_ext.losses import CrossMatchLoss, MaskedDiceLoss, SupervisedLoss
from crossmatch_ext.networks import FeaturePerturbation, FeaturePerturbedNetwork, UNet

SIZE = 32


def _blobs(n: int, seed: int) -> list[dict]:
    """2D images with one bright disc (label 1) in noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    items = []
    for _ in range(n):
        cy, cx = torch.randint(8, SIZE - 8, (2,), generator=g)
        r = torch.randint(4, 8, (1,), generator=g)
        label = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2).long()
        image = label.float() + 0.3 * torch.randn(SIZE, SIZE, generator=g)
        items.append({"image": image[None], "label": label[None]})
    return items


def _unlabeled(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed + 100)
    items = []
    for item in _blobs(n, seed):
        image = item["image"]
        box1 = torch.zeros(1, SIZE, SIZE)
        box1[:, 4:20, 6:18] = 1
        items.append(
            {
                "image": image,
                "image_s1": image + 0.2 * torch.randn(image.shape, generator=g),
                "image_s2": image * 1.3,
                "cutmix_box_s1": box1,
                "cutmix_box_s2": torch.zeros(1, SIZE, SIZE),
            }
        )
    return items


def _network(seed: int = 0, dropout=(0.0,) * 5) -> FeaturePerturbedNetwork:
    torch.manual_seed(seed)
    net = UNet(1, 2, features=(4, 8, 8, 16, 16), dropout=dropout)
    return FeaturePerturbedNetwork(net, FeaturePerturbation(0.5, spatial_dims=2))


def _loader(batch: int = 2, n: int = 6) -> CrossMatchLoader:
    return CrossMatchLoader(
        DataLoader(_blobs(n, 1), batch_size=batch, shuffle=True, drop_last=True),
        DataLoader(_unlabeled(n, 2), batch_size=batch, shuffle=True, drop_last=True),
        DataLoader(_unlabeled(n, 3), batch_size=batch, shuffle=True, drop_last=True),
    )


def _trainer(network, loader, **kwargs) -> CrossMatchTrainer:
    kwargs.setdefault("optimizer", torch.optim.Adam(network.parameters(), lr=1e-2))
    return CrossMatchTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        loss_function=CrossMatchLoss(MaskedDiceLoss(classes=[1]), weighting="la"),
        confidence_threshold=0.6,
        **kwargs,
    )


class _Recording(FeaturePerturbedNetwork):
    """Keeps every forward output (with retained gradient when it has one)."""

    def __init__(self, inner: FeaturePerturbedNetwork) -> None:
        super().__init__(inner.network, inner.perturbation)
        self.outputs: list[tuple[torch.Tensor, int]] = []
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x, perturbed: int = 0):
        self.modes.append((self.network.training, self.perturbation.training))
        out = super().forward(x, perturbed)
        if out.requires_grad:
            out.retain_grad()
        self.outputs.append((out, perturbed))
        return out


def test_gradient_reaches_exactly_the_students_not_the_teacher():
    net = _Recording(_network())
    trainer = _trainer(net, _loader(), max_iterations=1)
    trainer.run()
    assert len(net.outputs) == 4  # P1, P2 (no grad), P3, P4
    (p1, _), (p2, _), (p3, _), (p4, _) = net.outputs
    assert not p1.requires_grad and not p2.requires_grad
    b = 2

    def has_grad(rows: torch.Tensor) -> bool:
        return bool(rows.abs().sum() > 0)

    g3 = p3.grad.split([b, b, b, b])  # labeled, weak view (teacher), weak FP, strong FP
    assert has_grad(g3[0]) and has_grad(g3[2]) and has_grad(g3[3])
    assert not has_grad(g3[1]), "the clean weak view is the teacher and must not be trained"
    for rows in p4.grad.split([b] * 4):  # strong 1, strong 2, strong 2 weak FP, strong 2 strong FP
        assert has_grad(rows)
    out = trainer.state.output
    for key in ("loss_supervised", "loss_strong1", "loss_strong2", "loss_kd", "kd_teacher_ww", "kd_decoder_ss",
                "mask_ratio", "confidence_threshold"):
        assert key in out[0]
    assert 0.0 <= out[0]["mask_ratio"] <= 1.0


def test_stacked_decoder_equals_separate_decodes_with_the_same_masks():
    fpn = _network(dropout=(0.0,) * 5)
    fpn.network.eval()  # batch-independent BN, so stacking cannot mix samples
    fpn.perturbation.train()
    captured = {}
    fpn.perturbation.register_forward_hook(lambda m, i, o: captured.update(weak=o[0], strong=o[1]))
    x = torch.randn(3, 1, SIZE, SIZE)
    with torch.no_grad():
        stacked = fpn(x, perturbed=2)
        features = fpn.network.encode(x)
        clean = fpn.network.decode(features, head_dropout=False)
        weak = fpn.network.decode(captured["weak"], head_dropout=False)
        strong = fpn.network.decode(captured["strong"], head_dropout=False)
    assert stacked.shape[0] == 3 + 2 + 2
    torch.testing.assert_close(stacked[:3], clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stacked[3:5], weak, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stacked[5:7], strong, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(weak, strong)


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    net = _network(seed=1)
    losses: list[float] = []
    trainer = _trainer(net, _loader(batch=2, n=8), max_iterations=24)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss"])))
    trainer.run()
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def test_supervised_only_matches_a_plain_supervised_trainer_step():
    batch = next(iter(DataLoader(_blobs(2, 5), batch_size=2)))
    fpn = _network(seed=3)
    plain = copy.deepcopy(fpn.network)
    loss = SupervisedLoss(MaskedDiceLoss(classes=[1]))
    ours = CrossMatchTrainer(
        device="cpu", max_epochs=1, train_data_loader=[batch], network=fpn,
        optimizer=torch.optim.SGD(fpn.parameters(), lr=0.1), loss_function=CrossMatchLoss(MaskedDiceLoss(classes=[1])),
        supervised_only=True,
    )
    reference = SupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=[batch], network=plain,
        optimizer=torch.optim.SGD(plain.parameters(), lr=0.1), loss_function=loss,
    )
    ours.run()
    reference.run()
    assert ours.state.output[0]["loss"] == pytest.approx(reference.state.output[0]["loss"], abs=1e-6)
    for a, b in zip(fpn.network.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_eval_teacher_mode_keeps_perturbation_and_restores_train_mode():
    net = _Recording(_network(dropout=(0.0,) * 5))
    trainer = _trainer(net, _loader(), max_iterations=1, teacher_mode="eval")
    trainer.run()
    modes = net.modes
    assert modes[:2] == [(False, True), (False, True)]  # P1, P2
    assert modes[2:] == [(True, True), (True, True)]  # P3, P4


def test_invalid_configuration_is_reported():
    with pytest.raises(ValueError, match="FeaturePerturbedNetwork"):
        _trainer(UNet(1, 2), _loader())
    with pytest.raises(ValueError, match="teacher_mode"):
        _trainer(_network(), _loader(), teacher_mode="student")
    trainer = _trainer(_network(), [next(iter(DataLoader(_blobs(2, 1), batch_size=2)))])
    with pytest.raises(ValueError, match="supervised_only"):
        trainer.run()


def _poisoned(net: FeaturePerturbedNetwork, poison: set[int], trainer_box: list) -> None:
    """Make the gradient of the first convolution NaN in the iterations listed in ``poison``."""
    first = next(p for p in net.parameters() if p.dim() == 4)
    first.register_hook(lambda g: g * float("nan") if trainer_box[0].state.iteration in poison else g)


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("check", ["host", "device"])
def test_a_step_with_non_finite_gradients_is_skipped_and_training_goes_on(check):
    net = _network(seed=2)
    box: list = []
    trainer = _trainer(net, _loader(), max_iterations=3, nonfinite_check=check, nonfinite_read_interval=1)
    box.append(trainer)
    _poisoned(net, {2}, box)
    states: dict[int, dict[str, torch.Tensor]] = {}
    steps: dict[int, int] = {}

    def record(engine):
        states[engine.state.iteration] = _snapshot(net)
        steps[engine.state.iteration] = max(int(s["step"]) for s in trainer.optimizer.state.values())

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    trainer.run()
    assert trainer.skipped_steps == 1
    for key, value in states[2].items():  # weights and batch-norm statistics as after step 1
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0, msg=key)
    assert steps == {1: 1, 2: 1, 3: 2}  # the optimizer did not count the skipped step
    assert all(torch.isfinite(v).all() for v in states[3].values() if v.is_floating_point())
    changed = [k for k in states[3] if states[3][k].is_floating_point() and not torch.equal(states[3][k], states[2][k])]
    assert changed, "the step after the skipped one must update the weights"


@pytest.mark.parametrize("check", ["host", "device"])
def test_non_finite_gradients_in_a_row_stop_the_run_with_the_weights_before_them(check):
    net = _network(seed=2)
    box: list = []
    trainer = _trainer(net, _loader(n=12), max_iterations=8, max_nonfinite_steps=3, nonfinite_check=check,
                       nonfinite_read_interval=2)
    box.append(trainer)
    _poisoned(net, {2, 3, 4, 5, 6, 7, 8}, box)  # the first step is finite: the optimizer then has a state
    after_first: dict[str, torch.Tensor] = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: after_first.update(_snapshot(net)))
    # steps 2, 3, 4 are bad: the host check stops at 4, the device check at its read of iteration 4 (every 2)
    with pytest.raises(FloatingPointError, match=r"iteration 4: the gradients were not finite in 3 steps in a row"):
        trainer.run()
    for key, value in _snapshot(net).items():
        torch.testing.assert_close(value, after_first[key], rtol=0, atol=0, msg=key)


def test_the_device_check_never_waits_for_the_device(monkeypatch):
    """With ``nonfinite_check="device"`` the check reads no value on the host: every tensor-to-Python conversion
    raises inside it (except in the optimizer's own step, whose host-side step counter Adam reads); the skipped step
    is still undone and counted when the count is read."""
    net = _network(seed=2)
    box: list = []
    trainer = _trainer(net, _loader(n=8), max_iterations=4, nonfinite_check="device", nonfinite_read_interval=10)
    box.append(trainer)
    _poisoned(net, {3}, box)
    inner, optimizer_step = trainer._step_on_device, trainer.optimizer.step
    names = ("item", "tolist", "__bool__", "__int__", "__float__")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    state = {"checking": False}
    calls: list[bool] = []

    def refusing(name):
        def conversion(self, *args, **kwargs):
            if state["checking"]:
                raise AssertionError(f"the device check synchronised with the host (Tensor.{name})")
            return originals[name](self, *args, **kwargs)

        return conversion

    def step(*args, **kwargs):
        checking, state["checking"] = state["checking"], False
        try:
            return optimizer_step(*args, **kwargs)
        finally:
            state["checking"] = checking

    def guarded(engine):
        state["checking"] = True
        try:
            done = inner(engine)
        finally:
            state["checking"] = False
        calls.append(done)
        return done

    for name in names:
        monkeypatch.setattr(torch.Tensor, name, refusing(name))
    monkeypatch.setattr(trainer.optimizer, "step", step)

    monkeypatch.setattr(trainer, "_step_on_device", guarded)
    trainer.run()
    assert calls == [False, True, True, True]  # the first step has no optimizer state yet: checked on the host
    assert trainer.skipped_steps == 1  # read at the end of the run
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_without_the_check_a_non_finite_gradient_reaches_the_weights():
    net = _network(seed=2)
    box: list = []
    trainer = _trainer(net, _loader(), max_iterations=1, max_nonfinite_steps=0)
    box.append(trainer)
    _poisoned(net, {1}, box)
    trainer.run()
    assert trainer.skipped_steps == 0
    assert not all(torch.isfinite(p).all() for p in net.parameters())
    with pytest.raises(ValueError, match="max_nonfinite_steps"):
        _trainer(_network(), _loader(), max_nonfinite_steps=-1)
