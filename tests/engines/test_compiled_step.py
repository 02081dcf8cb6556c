"""The compiled CrossMatch step (``compile=...``) against the eager step, and its fallback to eager.

``aot_eager`` traces the passes the way ``torch.compile`` does but runs ATen's own kernels, so the step must be the
eager step to float tolerance. Inductor generates new kernels; with ``fallback_random`` it draws dropout masks
from the same random stream as eager, so the step can be compared too (looser tolerance: fused kernels sum in
another order).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from test_step_equivalence import _batch, _setup, _trainer_step

from crossmatch_ext.engines import CrossMatchTrainer
from crossmatch_ext.losses import CrossMatchLoss


def _compare(task, rtol, **compile_kwargs):
    network, dice, size = _setup(task)
    eager_net = copy.deepcopy(network)
    batch = _batch(task, size, seed=11)
    threshold = 0.55 if task == "la" else 0.3
    out_eager, grads_eager = _trainer_step(eager_net, dice, task, batch, threshold)
    out, grads = _trainer_step(network, dice, task, batch, threshold, **compile_kwargs)
    for name in ("loss", "loss_supervised", "loss_strong1", "loss_kd"):
        assert float(out[name]) == pytest.approx(float(out_eager[name]), rel=rtol, abs=1e-6), name
    assert set(grads) == set(grads_eager) and grads
    for name, grad in grads.items():
        reference = grads_eager[name]
        error = float((grad - reference).norm())
        assert error <= rtol * float(reference.norm()) + 1e-7, (name, error, float(reference.norm()))
    for (name, a), b in zip(network.state_dict().items(), eager_net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-6, msg=name)
    return out


@pytest.mark.parametrize("task", ["acdc", "la"])
def test_traced_step_equals_eager_step(task):
    torch._dynamo.reset()
    _compare(task, rtol=1e-5, compile="default", compile_backend="aot_eager")


def test_cuda_graph_mode_marks_steps_and_equals_eager_step(monkeypatch):
    # on a CPU "reduce-overhead" records no CUDA graph; what the trainer adds is a step mark before the passes
    torch._dynamo.reset()
    marks: list[int] = []
    original = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: (marks.append(1), original())[1])
    _compare("acdc", rtol=1e-5, compile="reduce-overhead", compile_backend="aot_eager")
    assert marks == [1]  # one step, one mark


@pytest.mark.slow
def test_inductor_step_matches_eager_step(monkeypatch):
    pytest.importorskip("torch._inductor")
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    monkeypatch.setattr(inductor_config, "fallback_random", True)  # eager's random stream for the dropout masks
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a silent fallback to eager would pass the comparison
        _compare("acdc", rtol=2e-4, compile="default")


def test_compiler_failure_falls_back_to_eager_with_one_warning():
    torch._dynamo.reset()
    calls: list[int] = []

    def broken_backend(graph_module, example_inputs):
        calls.append(1)
        raise RuntimeError("no C++ compiler on this machine")

    with pytest.warns(RuntimeWarning, match="continues eagerly: .*no C\\+\\+ compiler") as record:
        _compare("acdc", rtol=1e-5, compile="default", compile_backend=broken_backend)
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    assert calls == [1]  # the first pass failed; no pass tried the compiler again


def test_compile_setting_is_checked():
    network, dice, _ = _setup("acdc")
    with pytest.raises(ValueError, match="compile must be one of"):
        CrossMatchTrainer(device="cpu", max_epochs=1, train_data_loader=[{}], network=network,
                          optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
                          loss_function=CrossMatchLoss(dice, "acdc"), compile="fastest")
    trainer = CrossMatchTrainer(device="cpu", max_epochs=1, train_data_loader=[{}], network=network,
                                optimizer=torch.optim.SGD(network.parameters(), lr=0.0),
                                loss_function=CrossMatchLoss(dice, "acdc"), compile=False)
    assert trainer.compile_mode == "none" and trainer.non_blocking
