"""Where the time of a CrossMatch step goes: every pass, the loss terms, backward, optimizer, per-iteration handlers.

Usage:
    python benchmarks/profile_step.py --task acdc --patch 128 128 --batch 4 [--steps 5] [--threads 2]
    python benchmarks/profile_step.py --task la --patch 64 64 48 --batch 2 --device cuda --amp bfloat16

The step is taken apart phase by phase exactly as :class:`~crossmatch_ext.engines.CrossMatchTrainer` runs it
(P1 and P2 no-grad teacher passes, CutMix, P3 and P4 gradient forwards, pseudo-labels, the nine loss terms, one
backward, the optimizer step), each phase timed with a device synchronisation around it. The backward of each
gradient pass is measured separately by a forward + backward of that pass alone (``backward_p3_alone``,
``backward_p4_alone``). The supervised step is split the same way. Finally a real trainer runs a few iterations
with the bundles' per-iteration train metric (``AsDiscreted`` post-processing + ``MeanDice``) and the cost of
each Ignite handler is reported (``handlers_ms``), from Ignite's ``HandlersTimeProfiler``.

Prints one JSON object: medians over ``--steps`` steps (after ``--warmup``) with min and max, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from step_time import AMP_CHOICES, build_step_objects, make_batch, parse_amp


def _stats(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {"median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}


class _Clock:
    """Accumulate wall time per phase name, synchronising the device before each reading."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.times: dict[str, list[float]] = {}
        self.last = 0.0

    def start(self) -> None:
        self._sync()
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.times.setdefault(name, []).append(now - self.last)
        self.last = now

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def profile(args: argparse.Namespace) -> dict:
    from crossmatch_ext.losses import PseudoLabel

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.RandomState(0)
    network, loss_function, optimizer, threshold = build_step_objects(args.task, device)
    amp_dtype = parse_amp(args.amp)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else nullcontext
    b = args.batch
    clock = _Clock(device)

    def to(batch: dict) -> dict:
        return {k: v.to(device) for k, v in batch.items()}

    total = args.steps + args.warmup
    for step in range(total):
        if step == args.warmup:
            clock.times.clear()
        labeled = to(make_batch(args.task, args.patch, b, False, rng))
        unlabeled = to(make_batch(args.task, args.patch, b, True, rng))
        mix = to(make_batch(args.task, args.patch, b, True, rng))
        x, y, weak = labeled["image"], labeled["label"], unlabeled["image"]
        boxes = [unlabeled["cutmix_box_s1"][:, 0], unlabeled["cutmix_box_s2"][:, 0]]
        clock.start()
        network.train()
        with torch.no_grad(), autocast():
            mix_teacher = PseudoLabel.from_logits(network(mix["image"]))
            clock.lap("p1_teacher_plain_nograd")
            out = network(torch.cat([x, mix["image"]]), perturbed=b)
            _, _, mwfp, msfp = out.split([b] * 4)
            mix_weak_fp, mix_strong_fp = PseudoLabel.from_logits(mwfp), PseudoLabel.from_logits(msfp)
            clock.lap("p2_teacher_perturbed_nograd")
        strong1 = torch.where(boxes[0].unsqueeze(1).bool(), mix["image_s1"], unlabeled["image_s1"])
        strong2 = torch.where(boxes[1].unsqueeze(1).bool(), mix["image_s2"], unlabeled["image_s2"])
        clock.lap("cutmix")
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out3 = network(torch.cat([x, weak]), perturbed=b)
            clock.lap("p3_forward")
            out4 = network(torch.cat([strong1, strong2]), perturbed=b)
            clock.lap("p4_forward")
        pred_x, pred_weak, pred_wfp, pred_sfp = out3.split([b] * 4)
        pred_s1, pred_s2, pred_s2_wfp, pred_s2_sfp = out4.split([b] * 4)
        teacher = PseudoLabel.from_logits(pred_weak)
        weak_fp, strong_fp = PseudoLabel.from_logits(pred_wfp), PseudoLabel.from_logits(pred_sfp)
        t1, t2 = teacher.mixed(boxes[0], mix_teacher), teacher.mixed(boxes[1], mix_teacher)
        wfp2, sfp2 = weak_fp.mixed(boxes[1], mix_weak_fp), strong_fp.mixed(boxes[1], mix_strong_fp)
        clock.lap("pseudo_labels")
        terms = loss_function(
            labeled_logits=pred_x, labels=y, strong1_logits=pred_s1, strong2_logits=pred_s2,
            weak_view_weak_fp_logits=pred_wfp, weak_view_strong_fp_logits=pred_sfp,
            strong2_weak_fp_logits=pred_s2_wfp, strong2_strong_fp_logits=pred_s2_sfp, teacher=teacher,
            teacher_mixed1=t1, teacher_mixed2=t2, weak_fp_mixed2=wfp2, strong_fp_mixed2=sfp2, threshold=threshold,
        )
        clock.lap("loss_terms_9")
        terms["loss"].backward()
        clock.lap("backward_all")
        optimizer.step()
        clock.lap("optimizer")
        # each gradient pass alone: forward + backward (the difference is its backward)
        for name, inputs in (("p3", torch.cat([x, weak])), ("p4", torch.cat([strong1, strong2]))):
            optimizer.zero_grad(set_to_none=True)
            clock.start()
            with autocast():
                out = network(inputs, perturbed=b)
            clock.lap(f"{name}_forward_alone")
            out.float().mean().backward()
            clock.lap(f"backward_{name}_alone")
        # the supervised step
        optimizer.zero_grad(set_to_none=True)
        clock.start()
        with autocast():
            pred = network(x)
        clock.lap("supervised_forward")
        loss = loss_function.supervised(pred, y)
        clock.lap("supervised_loss")
        loss.backward()
        clock.lap("supervised_backward")
        optimizer.step()
        clock.lap("supervised_optimizer")

    phases = ["p1_teacher_plain_nograd", "p2_teacher_perturbed_nograd", "cutmix", "p3_forward", "p4_forward",
              "pseudo_labels", "loss_terms_9", "backward_all", "optimizer"]
    step_total = [sum(vals) for vals in zip(*(clock.times[p] for p in phases))]
    sup_phases = ["supervised_forward", "supervised_loss", "supervised_backward", "supervised_optimizer"]
    sup_total = [sum(vals) for vals in zip(*(clock.times[p] for p in sup_phases))]
    result = {
        "task": args.task, "patch": args.patch, "batch": b, "device": str(device), "amp": args.amp,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "steps": args.steps,
        "crossmatch_step": _stats(step_total), "supervised_step": _stats(sup_total),
        "ratio_crossmatch_to_supervised": round(statistics.median(step_total) / statistics.median(sup_total), 2),
        "phases": {name: _stats(vals) for name, vals in clock.times.items()},
        "share_of_crossmatch_step": {
            p: round(statistics.median(clock.times[p]) / statistics.median(step_total), 3) for p in phases
        },
    }
    if not args.skip_handlers:
        result["handlers_ms"] = profile_handlers(args, device)
    return result


def profile_handlers(args: argparse.Namespace, device: torch.device) -> dict:
    """Per-iteration handler costs of a real trainer with the bundles' train metric and stats handlers."""
    from ignite.handlers import HandlersTimeProfiler
    from monai.handlers import MeanDice, StatsHandler, from_engine
    from monai.transforms import AsDiscreted, Compose

    from crossmatch_ext.engines import CrossMatchTrainer, loss_terms

    rng = np.random.RandomState(1)
    network, loss_function, optimizer, threshold = build_step_objects(args.task, device)
    classes = 2 if args.task == "la" else 4
    loader = [
        {"labeled": make_batch(args.task, args.patch, args.batch, False, rng),
         "unlabeled": make_batch(args.task, args.patch, args.batch, True, rng),
         "mix": make_batch(args.task, args.patch, args.batch, True, rng)}
        for _ in range(args.handler_steps)
    ]
    trainer = CrossMatchTrainer(
        device=device, max_epochs=1, train_data_loader=loader, network=network, optimizer=optimizer,
        loss_function=loss_function, confidence_threshold=threshold, amp=parse_amp(args.amp) is not None,
        amp_kwargs={"dtype": parse_amp(args.amp or "bfloat16")},
        postprocessing=Compose([AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=classes)]),
        key_train_metric={"train_dice": MeanDice(include_background=False,
                                                 output_transform=from_engine(["pred", "label"]))},
        train_handlers=[StatsHandler(tag_name="train_loss", iteration_log=1, output_transform=loss_terms)],
    )
    profiler = HandlersTimeProfiler()
    profiler.attach(trainer)
    trainer.run()
    results = profiler.get_results()
    table: dict[str, float] = {}
    for row in results[:-2]:  # the last rows are the processing and data-loading totals
        handler, event, _total, _min, _max, mean, _std = row[:7]
        if isinstance(mean, (int, float)) and mean > 0:
            table[f"{handler} @ {event}"] = round(float(mean) * 1000, 2)
    for row in results[-2:]:
        table[str(row[0]) + " (mean)"] = round(float(row[5]) * 1000, 2) if isinstance(row[5], (int, float)) else row[5]
    return dict(sorted(table.items(), key=lambda kv: -kv[1] if isinstance(kv[1], float) else 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["la", "acdc"], default="acdc")
    parser.add_argument("--patch", type=int, nargs="+", default=None)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", nargs="?", const="bfloat16", default=None, choices=AMP_CHOICES,
                        help="autocast dtype (bare --amp: bfloat16)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--handler-steps", type=int, default=4)
    parser.add_argument("--skip-handlers", action="store_true")
    args = parser.parse_args()
    args.patch = args.patch or ([64, 64, 48] if args.task == "la" else [128, 128])
    stdout, sys.stdout = sys.stdout, sys.stderr  # handler logs go to stderr; stdout carries the JSON only
    try:
        result = profile(args)
    finally:
        sys.stdout = stdout
    print(json.dumps(result))


if __name__ == "__main__":
    main()
