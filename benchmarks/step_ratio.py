"""Our CrossMatch step against the authors' loop body, timed in one process, interleaved.

The reference is the statement-by-statement transcription of the authors' ``train_cross_match.py`` loop body kept
in ``tests/engines/test_step_equivalence.py`` (four passes in their order, nine terms with a textbook Dice, one
backward), followed by their ``optimizer.step()``; float32, eager, default memory layout. Each variant of our step
runs the bundles' network, loss and optimizer on the same random batches. Rounds alternate between the variants
(reference, then each of ours) so that a change of machine speed during the run hits all of them alike.

Variants (``--variants``):

* ``exact``: float32, channels-first, eager (``--amp False --channels_last False``: the path the step-equivalence
  test proves equal to the reference);
* ``default``: bf16 autocast where the CPU has native bf16 (float32 elsewhere) and channels-last: the bundles' CPU
  default until 2026-12-07, ``--amp True`` since (float32 is the CPU default now: benchmarks/README.md section 8);
* ``compiled``: ``default`` with ``compile="default"`` (inductor; compile time excluded by the warm-up rounds);
* ``exact_compiled``: ``exact`` with ``compile="default"``.

Usage::

    python benchmarks/step_ratio.py --task acdc --patch 128 128 --batch 4
    python benchmarks/step_ratio.py --task la --patch 64 64 48 --batch 2 --variants exact default

Prints one JSON object: per variant the median / min / max seconds per step and the ratio of its median to the
reference's median.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "engines"))

VARIANTS = ("exact", "default", "compiled", "exact_compiled")


def _like(optimizer: torch.optim.Optimizer, params) -> torch.optim.Optimizer:
    """An optimizer of the same class and settings over ``params`` (``defaults`` may hold entries the constructor
    does not take, e.g. AdamW's ``decoupled_weight_decay``)."""
    accepted = inspect.signature(type(optimizer)).parameters
    return type(optimizer)(params, **{k: v for k, v in optimizer.defaults.items() if k in accepted})


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        if check is not None and check():
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["la", "acdc"], default="acdc")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="default ACDC 128 128, LA 64 64 48")
    parser.add_argument("--batch", type=int, default=None, help="per loader (default ACDC 4, LA 2)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (one step of every variant each)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (compilation happens here)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    patch = args.patch or ([128, 128] if args.task == "acdc" else [64, 64, 48])
    batch = args.batch or (4 if args.task == "acdc" else 2)
    if args.threads:
        torch.set_num_threads(args.threads)

    import test_step_equivalence
    from ignite.engine import Events
    from step_time import _batch, build_step_objects
    from test_step_equivalence import _reference_step

    from crossmatch_ext.engines import CrossMatchTrainer
    from crossmatch_ext.losses import LOSS_WEIGHT_ALIASES, LOSS_WEIGHT_PRESETS

    test_step_equivalence.B = batch  # the transcription's batch size per loader
    rng = np.random.RandomState(0)
    total = args.rounds + args.warmup
    batches = [
        {"labeled": _batch(args.task, patch, batch, False, rng),
         "unlabeled": _batch(args.task, patch, batch, True, rng), "mix": _batch(args.task, patch, batch, True, rng)}
        for _ in range(total)
    ]
    network, loss_function, optimizer, threshold = build_step_objects(args.task, "cpu")
    classes, smooth = loss_function.dice.classes, loss_function.dice.smooth
    weights = LOSS_WEIGHT_PRESETS[LOSS_WEIGHT_ALIASES[args.task]]
    bf16 = native_bf16()

    reference_net = copy.deepcopy(network)
    reference_opt = _like(optimizer, reference_net.parameters())

    def reference(index: int) -> float:
        start = time.perf_counter()
        reference_opt.zero_grad()
        _reference_step(reference_net, batches[index], threshold, classes, smooth, weights)
        reference_opt.step()
        return time.perf_counter() - start

    def trainer_for(variant: str) -> tuple[CrossMatchTrainer, list[float]]:
        net = copy.deepcopy(network)
        opt = _like(optimizer, net.parameters())
        default = variant in ("default", "compiled")
        trainer = CrossMatchTrainer(
            device="cpu", max_epochs=1, train_data_loader=batches[:1], epoch_length=1, network=net, optimizer=opt,
            loss_function=copy.deepcopy(loss_function), confidence_threshold=threshold, decollate=False,
            amp=default and bf16, amp_kwargs={"dtype": torch.bfloat16}, channels_last=default,
            compile="default" if variant.endswith("compiled") else "none",
        )
        times: list[float] = []
        start = [0.0]
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: start.__setitem__(0, time.perf_counter()))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: times.append(time.perf_counter() - start[0]))
        return trainer, times

    trainers = {variant: trainer_for(variant) for variant in args.variants}
    reference_times: list[float] = []
    for index in range(total):
        reference_times.append(reference(index))
        for trainer, _ in trainers.values():
            trainer.data_loader = [batches[index]]
            trainer.run()  # a finished Ignite engine starts a new (one-step) run
        print(f"round {index + 1}/{total} done", file=sys.stderr, flush=True)

    def stats(times: list[float]) -> dict:
        measured = times[args.warmup:]
        return {"median_s": round(statistics.median(measured), 4), "min_s": round(min(measured), 4),
                "max_s": round(max(measured), 4), "steps": len(measured)}

    result = {"task": args.task, "patch": patch, "batch": batch, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "native_bf16": bf16, "reference": stats(reference_times)}
    for variant, (trainer, times) in trainers.items():
        entry = stats(times)
        entry["ratio_to_reference"] = round(entry["median_s"] / result["reference"]["median_s"], 3)
        entry["compiled_fell_back"] = trainer.compile_mode != "none" and trainer._compiled is None
        result[variant] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
