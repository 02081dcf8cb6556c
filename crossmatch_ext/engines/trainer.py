"""The CrossMatch training step as a MONAI ``SupervisedTrainer``.

One iteration follows the authors' current code (official CrossMatch, LA and ACDC ``train_cross_match.py``):

1. no-grad teacher passes on the "mix" batch: a plain forward (P1) giving the pseudo-label pasted into the CutMix
   box of the clean targets, and a feature-perturbed forward (P2) giving the pseudo-labels pasted into the box of
   the weak- and strong-FP targets. As in the authors' code, P2 runs on ``[labeled; mix]`` so that its batch
   statistics match theirs (the labeled half's output is unused);
2. CutMix of the two strong views: inside box ``k`` strong view ``k`` is replaced by the mix image's strong view;
3. gradient pass P3 on ``[labeled; weak view]`` with the weak view's features perturbed weakly and strongly;
4. gradient pass P4 on ``[strong view 1; strong view 2]`` with strong view 2's features perturbed;
5. the nine loss terms of :class:`~crossmatch_ext.losses.CrossMatchLoss`, one backward, one optimizer step.

In P3 and P4 the clean features of a view and its perturbed copies are stacked in the batch dimension, so the
decoder runs once per input batch (see :class:`~crossmatch_ext.networks.FeaturePerturbedNetwork`). Every pass goes
through the network's ``forward``, so ``DistributedDataParallel`` can wrap the network.

Choices where this differs from the authors' code (each documented, and switchable where it changes results):

* ``teacher_mode="train"`` (default, authors' code since Dec 2025) runs the no-grad mix passes in train mode
  (dropout active, batch-statistics BN); ``"eval"`` reproduces the paper-era code (eval-mode backbone, feature
  perturbation still applied so that the perturbed pseudo-labels exist).
* The authors' feature-perturbation dropout is never switched off (it sits in a plain list); ours is a registered
  module, so evaluation is deterministic; during training it is active exactly where theirs is.
* The authors' 3D CutMix box is written with its axes reversed (the slice axis is clipped); the boxes here come
  from :class:`~crossmatch_ext.transforms.RandCutMixBoxd` with correct axes (``legacy_axis_order=True`` restores
  the bug).
* The authors' LA 16-label unlabeled list overlaps the labeled one; the data lists of
  :mod:`crossmatch_ext.data.datasets.la` use the true complement. Neither choice lives in this step.

Cost (see ``benchmarks/README.md``). Every target of the nine loss terms is a detached pseudo-label, so the total
loss is a sum of a part that depends on P3 only and a part that depends on P4 only. With
``backward_per_pass=True`` (default) the P3 part is back-propagated before P4 runs, so only one pass's autograd
graph is alive at a time: the gradients, batch statistics and dropout draws are those of the single backward
(identical up to float summation order; a test compares both) at a much lower peak memory. Switches that change
results are off by default: ``teacher_batch="mix"`` runs P2 on the mix batch alone (its batch-norm statistics then
come from the mix images only), ``merge_teacher_passes=True`` takes P1's pseudo-label from P2's clean rows (no P1:
the clean teacher then shares P2's batch statistics and encoder dropout, and skips the head dropout), and ``amp``
on CPU runs every pass under bfloat16 autocast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer, Trainer
from monai.engines.utils import IterationEvents, engine_apply_transform
from monai.inferers import SimpleInferer
from monai.utils import CommonKeys as Keys

from crossmatch_ext.losses import CrossMatchLoss, PseudoLabel
from crossmatch_ext.networks import FeaturePerturbedNetwork

from .builders import stream_seed
from .randomness import RandomStreams
from .schedules import ConstantThreshold

__all__ = ["COMPILE_MODES", "STEP_STREAM", "CrossMatchTrainer", "TrainingRandomState", "unwrap_network"]

#: the random stream of the training step (:func:`~crossmatch_ext.engines.builders.stream_seed`); the loaders use
#: :data:`~crossmatch_ext.engines.builders.LOADER_STREAMS`
STEP_STREAM = 0

#: ``compile`` values of :class:`CrossMatchTrainer`: ``"none"`` (eager), or a ``torch.compile`` mode. On CUDA,
#: ``"reduce-overhead"`` replays the fixed-shape passes as CUDA graphs.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            network = network.module
        elif hasattr(network, "_orig_mod"):
            network = network._orig_mod  # type: ignore[assignment]
        else:
            return network


def _tensor(value: Any, device: torch.device, non_blocking: bool, channels_last: bool = False) -> torch.Tensor:
    """Move a (Meta)Tensor to ``device`` as a plain tensor (no metadata tracking on the hot path)."""
    if hasattr(value, "as_tensor"):
        value = value.as_tensor()
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    value = value.to(device, non_blocking=non_blocking)
    if channels_last and value.ndim in (4, 5):
        value = value.contiguous(memory_format=torch.channels_last if value.ndim == 4 else torch.channels_last_3d)
    return value


class TrainingRandomState:
    """Every random state the next training iteration needs, as one checkpointable object: the step's streams
    (PyTorch CPU / CUDA, NumPy, Python: dropout, feature perturbation), the training loader's position in its
    passes (when it records one: :class:`~crossmatch_ext.engines.ResumableLoader` parts) and the generators of
    the batched device views.

    Args:
        trainer: the trainer whose state this is.
    """

    def __init__(self, trainer: CrossMatchTrainer) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer.random_streams is None:
            trainer.random_streams = RandomStreams.seeded(trainer.step_seed())
        state: dict[str, Any] = {"step": trainer.random_streams.state_dict(),
                                 "skipped_steps": int(trainer.read_skipped_steps())}
        loader = trainer.data_loader
        if hasattr(loader, "state_dict"):
            state["loader"] = loader.state_dict()
        views = trainer.device_views
        if views is not None and hasattr(views, "state_dict"):
            state["device_views"] = views.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        import torch.distributed as dist

        trainer = self.trainer
        if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
            # the checkpoint holds the first process's step streams; the others start fresh ones of their own,
            # derived from their seed and the iteration (repeatable, but not those of the uninterrupted run)
            iteration = int(trainer.state.iteration or 0)
            trainer.random_streams = RandomStreams.seeded(stream_seed(trainer.step_seed(), 1 + iteration))
            trainer.logger.warning(
                f"process {dist.get_rank()}: the checkpoint holds the first process's dropout streams only; this "
                f"process draws fresh ones from its seed and iteration {iteration}, so from here it does not repeat "
                "the uninterrupted run exactly (its data does)"
            )
        else:
            streams = RandomStreams.seeded(trainer.step_seed())
            streams.load_state_dict(state["step"])
            trainer.random_streams = streams
        loader = trainer.data_loader
        if "loader" in state and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(state["loader"])
        trainer.skipped_steps = int(state.get("skipped_steps", 0))
        views = trainer.device_views
        if "device_views" in state and views is not None and hasattr(views, "load_state_dict"):
            views.load_state_dict(state["device_views"])

    @property
    def exact(self) -> bool:
        """Whether a resumed run can continue exactly as the uninterrupted one (the loader records its position)."""
        return bool(getattr(self.trainer.data_loader, "resumable", hasattr(self.trainer.data_loader, "state_dict")))


class CrossMatchTrainer(SupervisedTrainer):
    """Semi-supervised CrossMatch trainer.

    Args:
        device: where the step runs (``cuda`` when there is a GPU).
        max_epochs: number of epochs; ignored (derived) when ``max_iterations`` is given.
        train_data_loader: a :class:`~crossmatch_ext.engines.CrossMatchLoader` (or, with ``supervised_only``, a
            plain loader of labeled batches).
        network: a :class:`~crossmatch_ext.networks.FeaturePerturbedNetwork`, possibly wrapped in
            ``DistributedDataParallel``.
        optimizer: the optimizer of the network's parameters.
        loss_function: a :class:`~crossmatch_ext.losses.CrossMatchLoss` (its supervised term is used alone with
            ``supervised_only``; a plain loss ``f(logits, labels)`` is accepted in that mode).
        confidence_threshold: a float or a schedule ``f(iteration) -> float`` (see
            :mod:`crossmatch_ext.engines.schedules`).
        teacher_mode: ``"train"`` or ``"eval"``: the mode of the no-grad passes on the mix batch.
        supervised_only: train on the labeled batch only (the baseline rows of the paper's tables).
        max_iterations: stop after exactly this many steps (the authors count in iterations).
        backward_per_pass: back-propagate the loss terms of P3 before running P4 (same gradients, about half the
            peak memory; see the module docstring). ``False`` runs the single backward of the authors' code.
        teacher_batch: ``"labeled_and_mix"`` (authors) runs P2 on ``[labeled; mix]``; ``"mix"`` runs it on the mix
            batch alone (cheaper; changes P2's batch-norm statistics).
        merge_teacher_passes: take the mix image's plain pseudo-label from P2's clean rows instead of a separate
            pass P1 (cheaper; changes that pseudo-label, see the module docstring).
        channels_last: convert the network's 4D / 5D parameters to the channels-last / channels-last-3d memory
            layout (in place, once, here) and give every input batch that layout. Same computation, another
            summation order inside the convolution kernels; faster with oneDNN on CPU and with cuDNN on tensor cores.
            Under ``DistributedDataParallel`` convert the network before wrapping it instead.
        train_metric_interval: run the post-processing and the train metrics (``key_train_metric``,
            ``additional_metrics``) on every ``n``-th iteration only (and on the first of each epoch); the metric is
            then the mean over those iterations. Per-sample post-processing (``AsDiscreted``) costs tens of
            milliseconds an iteration, as much as a whole GPU step. The default 1 runs them on every iteration.
        compile: ``"none"`` (default) runs the passes eagerly; ``"default"``, ``"reduce-overhead"`` or
            ``"max-autotune"`` run them through ``torch.compile`` with that mode (``"reduce-overhead"``: CUDA
            graphs of the fixed-shape passes on a GPU). The trainer keeps ``network`` itself for checkpoints and
            evaluation; only the training passes call the compiled module. Compiling happens on the first call of
            each pass; if it fails, a warning is logged once and the step continues eagerly (a pass that failed is
            re-run eagerly). Inductor draws its own dropout masks, so for a given seed the compiled step differs
            from the eager one as channels-last does (same distributions).
        compile_backend: the ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces without code
            generation, for checks; or a backend callable).
        device_views: an optional callable that makes the unlabeled strong views and CutMix boxes on the training
            device, batched (e.g. :class:`crossmatch_ext.transforms.BatchedUnlabeledViews`): it is called with
            ``{image_key: weak view batch}`` (already on ``device``) for the unlabeled batch and for the mix batch,
            and returns that mapping with ``strong_keys`` and ``box_keys`` added. The loaders then only deliver the
            weak view. ``None`` (default): the views and boxes come with the batch from the loader workers.
        max_nonfinite_steps: a step whose gradients are not all finite (an overflow or NaN, e.g. a rounding accident
            of bfloat16 autocast) is skipped: no update, and the batch-norm statistics of its passes are put back, as
            PyTorch's gradient scaler skips the overflowing steps of float16 training; a warning names the iteration.
            After this many skipped steps in a row the run stops with an error (the weights being those before the
            first of them). ``0`` turns the check off (a non-finite gradient then reaches the weights). A finite step
            is unchanged. How the flag is read is ``nonfinite_check``'s choice.
        nonfinite_check: ``"host"`` reads the step's finiteness flag on the host (one device synchronisation per
            step); ``"device"`` never waits for the device: the step always runs, then every parameter, optimizer
            state and batch-norm buffer is put back on the device (``torch.where`` against a copy taken before the
            step) when the flag says not finite; the skipped steps are counted on the device and read every
            ``nonfinite_read_interval`` iterations and at the end, where the warning and the stop happen (the weights
            stay those before the first skipped step either way). It holds a copy of the parameters and optimizer
            state (about 3x the parameters' memory with Adam). A step counter the optimizer keeps on the host (Adam's
            unless ``capturable``) is corrected at each read, so until then Adam's bias correction counts the
            skipped steps (a factor ``1 - beta ** t`` that is already ~1 after a few thousand steps). ``"auto"``
            (default): ``"device"`` on CUDA, ``"host"`` elsewhere (a CPU's flag costs nothing to read).
        nonfinite_read_interval: iterations between reads of the device's count of skipped steps (``"device"``).
        seed: the seed of the step's random streams (dropout, feature perturbation, device views), derived with
            :func:`~crossmatch_ext.engines.builders.stream_seed`; ``None`` (default): PyTorch's initial seed when the
            run starts (what ``monai.utils.set_determinism`` set). The step runs with these streams swapped in
            (:class:`~crossmatch_ext.engines.RandomStreams`), so nothing that runs between iterations (validation,
            logging, train metrics, checkpoints) changes what the next iteration draws, and the resumable
            checkpoint holds them (:attr:`random_state`).
        image_key, label_key: keys of the labeled images / labels and of the unlabeled weak view.
        strong_keys: keys of the two strong views of an unlabeled item.
        box_keys: keys of the two CutMix boxes of an unlabeled item.
        kwargs: every other ``SupervisedTrainer`` argument (``train_handlers``, ``postprocessing``,
            ``key_train_metric``, ``amp``, ...). ``amp_kwargs`` (MONAI's) sets the autocast type when ``amp=True``
            on CUDA, e.g. ``{"dtype": torch.bfloat16}`` (default float16, which adds a gradient scaler). On CPU,
            ``amp=True`` runs CPU autocast in bfloat16 (or ``amp_kwargs``' dtype): fast on CPUs with AVX512-BF16 /
            AMX, but it changes rounding, so it is an opt-in.

    Raises:
        ValueError: for an unknown ``teacher_mode`` or ``teacher_batch``, or a network without ``perturbed`` passes.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        confidence_threshold: float | Callable[[int], float] = 0.95,
        teacher_mode: str = "train",
        supervised_only: bool = False,
        max_iterations: int | None = None,
        backward_per_pass: bool = True,
        teacher_batch: str = "labeled_and_mix",
        merge_teacher_passes: bool = False,
        channels_last: bool = False,
        train_metric_interval: int = 1,
        compile: str | bool = "none",
        compile_backend: str | Callable = "inductor",
        device_views: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None,
        max_nonfinite_steps: int = 20,
        nonfinite_check: str = "auto",
        nonfinite_read_interval: int = 50,
        seed: int | None = None,
        image_key: str = "image",
        label_key: str = "label",
        strong_keys: Sequence[str] = ("image_s1", "image_s2"),
        box_keys: Sequence[str] = ("cutmix_box_s1", "cutmix_box_s2"),
        **kwargs: Any,
    ) -> None:
        if teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {teacher_mode!r}.")
        if teacher_batch not in ("labeled_and_mix", "mix"):
            raise ValueError(f"teacher_batch must be 'labeled_and_mix' or 'mix', got {teacher_batch!r}.")
        inner = unwrap_network(network)
        if not supervised_only and not (hasattr(inner, "network") and hasattr(inner, "perturbation")):
            raise ValueError(
                "CrossMatchTrainer needs a crossmatch_ext.networks.FeaturePerturbedNetwork (network + feature "
                f"perturbation) as `network`, got {type(inner).__name__}."
            )
        if isinstance(compile, bool) or compile is None:
            compile = "default" if compile else "none"
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES} (or a bool), got {compile!r}.")
        if int(max_nonfinite_steps) < 0:
            raise ValueError(f"max_nonfinite_steps must be 0 (no check) or positive, got {max_nonfinite_steps}.")
        if int(train_metric_interval) < 1:
            raise ValueError(f"train_metric_interval must be a positive integer, got {train_metric_interval}.")
        if nonfinite_check not in ("auto", "host", "device"):
            raise ValueError(f"nonfinite_check must be 'auto', 'host' or 'device', got {nonfinite_check!r}.")
        if int(nonfinite_read_interval) < 1:
            raise ValueError(f"nonfinite_read_interval must be a positive integer, got {nonfinite_read_interval}.")
        self.train_metric_interval = int(train_metric_interval)  # read by the registrations in super().__init__
        kwargs.setdefault("non_blocking", True)  # host-to-device copies overlap the step (pinned loader memory)
        epoch_length = kwargs.pop("epoch_length", None)
        if epoch_length is None:
            try:
                epoch_length = len(train_data_loader)  # type: ignore[arg-type]
            except TypeError:
                epoch_length = None
        if max_iterations is not None:
            if epoch_length is None:
                raise ValueError("max_iterations needs a loader with a length or an explicit epoch_length.")
            max_epochs = max(1, math.ceil(int(max_iterations) / int(epoch_length)))
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            **kwargs,
        )
        self.confidence_threshold = (
            confidence_threshold if callable(confidence_threshold) else ConstantThreshold(float(confidence_threshold))
        )
        self.teacher_mode = teacher_mode
        self.supervised_only = bool(supervised_only)
        self.max_iterations = None if max_iterations is None else int(max_iterations)
        self.backward_per_pass = bool(backward_per_pass)
        self.teacher_batch = teacher_batch
        self.merge_teacher_passes = bool(merge_teacher_passes)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            module = unwrap_network(network)
            if any(p.dim() == 5 for p in module.parameters()):
                module.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs omit it
            elif any(p.dim() == 4 for p in module.parameters()):
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit it
        self.compile_mode = str(compile)
        self.compile_backend = compile_backend
        self._compiled: Callable[..., torch.Tensor] | None = None
        if self.compile_mode != "none":
            options: dict[str, Any] = {"backend": self.compile_backend, "dynamic": False}
            if self.compile_backend == "inductor":
                options["mode"] = self.compile_mode
            self._compiled = torch.compile(network, **options)
        self.device_views = device_views
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.skipped_steps = 0  # steps skipped for non-finite gradients in this run
        self._skipped_in_a_row = 0
        if nonfinite_check == "auto":
            nonfinite_check = "device" if torch.device(device).type == "cuda" else "host"
        self.nonfinite_check = nonfinite_check
        self.nonfinite_read_interval = int(nonfinite_read_interval)
        self._device_skipped: torch.Tensor | None = None  # "device" check: skipped steps, counted on the device
        self._device_in_a_row: torch.Tensor | None = None
        self._step_copies: list[torch.Tensor] = []
        self._host_counters: list[torch.Tensor] = []
        self._device_read = 0  # the device's count at the last read
        self._buffers: list[torch.Tensor] = []
        self._buffer_copies: list[torch.Tensor] = []
        self.image_key, self.label_key = image_key, label_key
        self.strong_keys = tuple(strong_keys)
        self.box_keys = tuple(box_keys)
        self._grad_scaler: torch.amp.GradScaler | None = None
        self.seed = None if seed is None else int(seed)
        self.random_streams: RandomStreams | None = None
        #: every random state of the run, for the resumable checkpoint (``state_dict`` / ``load_state_dict``)
        self.random_state = TrainingRandomState(self)
        # registered first, so a checkpoint loaded at STARTED (resume) replaces the fresh streams
        self.add_event_handler(Events.STARTED, self._start_random_streams)
        self.add_event_handler(Events.EPOCH_STARTED, self._note_epoch_start)
        if hasattr(train_data_loader, "set_epoch") and not isinstance(train_data_loader, torch.utils.data.DataLoader):
            self.add_event_handler(Events.EPOCH_STARTED, lambda engine: train_data_loader.set_epoch(engine.state.epoch))
        if self.max_iterations is not None:
            self.add_event_handler(Events.ITERATION_COMPLETED(once=self.max_iterations), lambda e: e.terminate())
        if self.max_nonfinite_steps and self.nonfinite_check == "device":
            self.add_event_handler(Events.ITERATION_COMPLETED(every=self.nonfinite_read_interval),
                                   self.read_skipped_steps)
        self.add_event_handler(Events.COMPLETED, self._log_summary)

    def step_seed(self) -> int:
        """The seed of the step's random streams (see ``seed``)."""
        return stream_seed(torch.initial_seed() if self.seed is None else self.seed, STEP_STREAM)

    def _start_random_streams(self, engine: Engine) -> None:
        if self.random_streams is None:
            self.random_streams = RandomStreams.seeded(self.step_seed())

    def _log_summary(self, engine: Engine) -> None:
        skipped = self.read_skipped_steps()
        check = (f"checked on the {self.nonfinite_check}" if self.max_nonfinite_steps
                 else "not checked: max_nonfinite_steps 0")
        self.logger.info(f"training finished after {engine.state.iteration} iterations: {skipped} steps skipped for "
                         f"non-finite gradients ({check})")

    def _note_epoch_start(self, engine: Engine) -> None:
        self._epoch_first_iteration = engine.state.iteration + 1

    def run(self) -> None:  # type: ignore[override]
        """Run the training. MONAI's ``Trainer.run`` would make a CUDA gradient scaler whenever ``amp`` is set (and
        warn on a CPU); the step keeps its own, for float16 on CUDA only (:meth:`_scaler`)."""
        self.scaler = None
        super(Trainer, self).run()  # MONAI's Workflow.run

    # ----------------------------------------------------------------------------------------------------------
    def _metric_due(self, engine: Engine) -> bool:
        """Whether this iteration runs the post-processing and the train metrics (see ``train_metric_interval``)."""
        interval = getattr(self, "train_metric_interval", 1)
        if interval == 1:
            return True
        iteration = engine.state.iteration
        # the first iteration an epoch runs (also when a resumed run starts mid-epoch): every epoch's metric has data
        first_of_epoch = iteration == getattr(self, "_epoch_first_iteration", 1)
        return (iteration - 1) % interval == 0 or first_of_epoch

    def _register_postprocessing(self, posttrans: Callable) -> None:
        """MONAI's post-processing registration, run only on the iterations chosen by :meth:`_metric_due`."""

        @self.on(IterationEvents.MODEL_COMPLETED)
        def _run_postprocessing(engine: Engine) -> None:
            if not self._metric_due(engine):
                return
            if not isinstance(engine.state.batch, list) or not isinstance(engine.state.output, list):
                engine.state.batch, engine.state.output = engine_apply_transform(
                    batch=engine.state.batch, output=engine.state.output, transform=posttrans
                )
            else:
                for i, (b, o) in enumerate(zip(engine.state.batch, engine.state.output)):
                    engine.state.batch[i], engine.state.output[i] = engine_apply_transform(b, o, posttrans)

    def _register_metrics(self, k_metric: dict, add_metrics: dict | None = None) -> None:
        """MONAI's metric registration; with ``train_metric_interval > 1`` each metric is updated only when due."""
        super()._register_metrics(k_metric, add_metrics)
        if getattr(self, "train_metric_interval", 1) == 1:
            return
        for metric in [*k_metric.values(), *(add_metrics or {}).values()]:
            update = getattr(metric, "iteration_completed", None)
            if update is None or not self.has_event_handler(update, Events.ITERATION_COMPLETED):
                continue
            self.remove_event_handler(update, Events.ITERATION_COMPLETED)

            def sampled(engine: Engine, update: Callable = update) -> None:
                if self._metric_due(engine):
                    update(engine)

            self.add_event_handler(Events.ITERATION_COMPLETED, sampled)

    def _autocast(self) -> Any:
        device = torch.device(self.state.device) if self.state.device is not None else torch.device("cpu")
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", **self.amp_kwargs)
        if self.amp and device.type == "cpu":  # opt-in CPU autocast: bfloat16 unless amp_kwargs names a dtype
            return torch.autocast("cpu", dtype=self.amp_kwargs.get("dtype", torch.bfloat16))
        return nullcontext()

    def _scaler(self) -> torch.amp.GradScaler | None:
        dtype = self.amp_kwargs.get("dtype", torch.float16)
        if not (self.amp and dtype == torch.float16 and torch.device(self.state.device).type == "cuda"):
            return None
        if self._grad_scaler is None:
            self._grad_scaler = torch.amp.GradScaler("cuda")
        return self._grad_scaler

    def _forward(self, network: nn.Module, images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """One training pass of ``network`` (compiled when ``compile`` is set, see the class docstring)."""
        if self._compiled is None:
            return network(images, **kwargs)
        try:
            return self._compiled(images, **kwargs)
        except Exception as error:  # a compiler failure must not end the run: continue eagerly
            self._compiled = None
            cause: BaseException = error
            while True:  # torch wraps the backend's own error
                inner = getattr(cause, "inner_exception", None) or cause.__cause__
                if inner is None or inner is cause:
                    break
                cause = inner
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            backend = getattr(self.compile_backend, "__name__", self.compile_backend)
            warnings.warn(
                f"torch.compile (mode {self.compile_mode!r}, backend {backend!r}) failed, the training step "
                f"continues eagerly: {type(cause).__name__}: {detail}",
                RuntimeWarning,
                stacklevel=2,
            )
            return network(images, **kwargs)

    def _mark_step(self) -> None:
        """Tell CUDA-graph replays that a new step starts (outputs of the previous step may be overwritten)."""
        if self._compiled is not None and self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    @contextmanager
    def _teacher(self, network: nn.Module) -> Any:
        """No-grad context for the mix passes, in the configured mode; restores train mode afterwards."""
        inner = cast(FeaturePerturbedNetwork, unwrap_network(network))
        if self.teacher_mode == "eval":
            inner.network.eval()
            inner.perturbation.train()  # the perturbed pseudo-labels must still be perturbed
        else:
            network.train()
        with torch.no_grad(), self._autocast():
            yield
        network.train()

    @staticmethod
    def _no_sync(network: nn.Module) -> Any:
        """``DistributedDataParallel.no_sync`` (gradients of the first backward are reduced with the second)."""
        return network.no_sync() if isinstance(network, nn.parallel.DistributedDataParallel) else nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        scaler = self._scaler()
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def _step(self, engine: CrossMatchTrainer) -> None:
        scaler = self._scaler()
        if scaler is not None:  # float16: the scaler skips overflowing steps itself
            scaler.step(engine.optimizer)
            scaler.update()
        elif self.max_nonfinite_steps and self.nonfinite_check == "device" and self._step_on_device(engine):
            return
        elif self.max_nonfinite_steps and not self._finite_gradients(engine.optimizer):
            self._skip_step(engine)
        else:
            self._skipped_in_a_row = 0
            engine.optimizer.step()

    def _step_on_device(self, engine: CrossMatchTrainer) -> bool:
        """The optimizer step, undone on the device when the gradients are not all finite (no host synchronisation).
        False (nothing done) when the optimizer has no state yet (its first step): the host check runs then."""
        optimizer = engine.optimizer
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params or any(p not in optimizer.state or not optimizer.state[p] for p in params):
            return False
        device = params[0].device
        tensors = list(params)
        self._host_counters = []
        for p in params:
            for value in optimizer.state[p].values():
                if not isinstance(value, torch.Tensor):
                    continue
                # Adam's step counter stays on the host unless capturable: corrected when the count is read
                (tensors if value.device == device else self._host_counters).append(value)
        if len(self._step_copies) != len(tensors) or any(
            c.shape != t.shape or c.dtype != t.dtype or c.device != t.device
            for c, t in zip(self._step_copies, tensors)
        ):
            self._step_copies = [torch.empty_like(t) for t in tensors]
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(p.grad).all() for p in params]).all()
            torch._foreach_copy_(self._step_copies, tensors)
            optimizer.step()
            for tensor, copy in zip(tensors, self._step_copies):
                tensor.copy_(torch.where(finite, tensor, copy))
            for buffer, copy in zip(self._buffers, self._buffer_copies):
                buffer.copy_(torch.where(finite, buffer, copy))
            skipped = (~finite).to(torch.int64)
            if self._device_skipped is None or self._device_in_a_row is None:
                self._device_skipped = torch.zeros((), dtype=torch.int64, device=finite.device)
                self._device_in_a_row = torch.zeros((), dtype=torch.int64, device=finite.device)
            self._device_skipped += skipped
            self._device_in_a_row.add_(1).mul_(skipped)
        return True

    def read_skipped_steps(self, engine: Engine | None = None) -> int:
        """Read the device's count of skipped steps (``nonfinite_check="device"``): warn about new ones, stop the run
        after ``max_nonfinite_steps`` in a row. Returns :attr:`skipped_steps`."""
        if self._device_skipped is None or self._device_in_a_row is None:
            return self.skipped_steps
        counts = torch.stack([self._device_skipped, self._device_in_a_row]).tolist()  # one synchronisation
        device_total, in_a_row = int(counts[0]), int(counts[1])
        # the first steps (before the optimizer has a state) are checked on the host and counted there
        new, self._device_read = device_total - self._device_read, device_total
        self.skipped_steps += new
        total = self.skipped_steps
        for counter in self._host_counters:  # the optimizer's host-side step counters counted the skipped steps
            counter.sub_(new)
        iteration = self.state.iteration
        precision = f"{self.amp_kwargs.get('dtype', torch.bfloat16)} autocast" if self.amp else "float32"
        if in_a_row >= self.max_nonfinite_steps:
            raise FloatingPointError(
                f"iteration {iteration}: the gradients were not finite in {in_a_row} steps in a row "
                f"({precision}), so training stops; the weights are those before iteration {iteration - in_a_row + 1}. "
                "Check the input images for NaN or extreme values, lower learning_rate, or train in float32 "
                "(--amp False)."
            )
        if new > 0:
            self.logger.warning(
                f"iterations up to {iteration}: {new} steps with non-finite gradients ({precision}) were skipped (no "
                f"update, batch-norm statistics restored), {total} skipped in this run"
            )
        return self.skipped_steps

    def _keep_buffers(self, network: nn.Module) -> None:
        """Copy the buffers (batch-norm statistics and counts) before the step's passes update them."""
        if not self.max_nonfinite_steps:
            return
        if not self._buffers:
            self._buffers = list(network.buffers())
            self._buffer_copies = [torch.empty_like(b) for b in self._buffers]
        if self._buffers:
            torch._foreach_copy_(self._buffer_copies, self._buffers)

    @staticmethod
    def _finite_gradients(optimizer: torch.optim.Optimizer) -> bool:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return True
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def _skip_step(self, engine: CrossMatchTrainer) -> None:
        """Discard a step with non-finite gradients: no update, the batch-norm statistics put back."""
        engine.optimizer.zero_grad(set_to_none=True)
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._buffer_copies)
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        iteration = engine.state.iteration
        precision = f"{self.amp_kwargs.get('dtype', torch.bfloat16)} autocast" if self.amp else "float32"
        if self._skipped_in_a_row >= self.max_nonfinite_steps:
            raise FloatingPointError(
                f"iteration {iteration}: the gradients were not finite in {self._skipped_in_a_row} steps in a row "
                f"({precision}), so training stops; the weights are those before iteration "
                f"{iteration - self._skipped_in_a_row + 1}. Check the input images for NaN or extreme values, lower "
                "learning_rate, or train in float32 (--amp False)."
            )
        self.logger.warning(
            f"iteration {iteration}: non-finite gradients ({precision}); the step is skipped (no update, batch-norm "
            f"statistics restored), {self.skipped_steps} skipped in this run"
        )

    def _backward_and_step(self, engine: CrossMatchTrainer, loss: torch.Tensor) -> None:
        self._backward(loss)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        self._step(engine)

    def _labeled(self, engine: CrossMatchTrainer, batch: Mapping) -> tuple[Any, Any]:
        image, label = engine.prepare_batch(batch, engine.state.device, engine.non_blocking, **engine.to_kwargs)[:2]
        if label is None:
            raise ValueError(f"the labeled batch has no '{self.label_key}' entry (keys: {sorted(batch)}).")
        return image, label

    # ----------------------------------------------------------------------------------------------------------
    def _iteration(self, engine: CrossMatchTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if self.random_streams is None:  # called outside a run (tests): the global streams as they are
            return self._step_iteration(engine, batchdata)
        with self.random_streams.swap():
            return self._step_iteration(engine, batchdata)

    def _step_iteration(self, engine: CrossMatchTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if self.supervised_only or "unlabeled" not in batchdata:
            if not self.supervised_only:
                raise ValueError(
                    "CrossMatchTrainer expects batches {'labeled', 'unlabeled', 'mix'} from a CrossMatchLoader; "
                    f"got keys {sorted(batchdata)}. Use supervised_only=True to train on labeled batches alone."
                )
            return self._supervised_iteration(engine, batchdata.get("labeled", batchdata))
        return self._crossmatch_iteration(engine, batchdata)

    def _supervised_iteration(self, engine: CrossMatchTrainer, batch: Mapping) -> dict:
        self._keep_buffers(engine.network)
        image, label = self._labeled(engine, batch)
        if self.channels_last:
            image = _tensor(image, engine.state.device, engine.non_blocking, True)
        engine.state.batch = batch
        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: label}
        loss_function = engine.loss_function
        supervised = loss_function.supervised if isinstance(loss_function, CrossMatchLoss) else loss_function
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        self._mark_step()
        with self._autocast():
            if self._compiled is not None and isinstance(engine.inferer, SimpleInferer):
                pred = self._forward(engine.network, image)
            else:
                pred = engine.inferer(image, engine.network)
            engine.state.output[Keys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            loss = supervised(pred, label).mean()
        engine.state.output[Keys.LOSS] = loss
        engine.state.output["loss_supervised"] = loss.detach()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._backward_and_step(engine, loss)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _crossmatch_iteration(self, engine: CrossMatchTrainer, batchdata: Mapping) -> dict:
        self._keep_buffers(engine.network)
        device, non_blocking = engine.state.device, engine.non_blocking
        labeled_batch = batchdata["labeled"]
        unlabeled, mix = batchdata["unlabeled"], batchdata.get("mix")
        image, label = self._labeled(engine, labeled_batch)
        # MONAI decollates engine.state.batch for postprocessing and metrics: it must be the labeled batch only.
        engine.state.batch = labeled_batch
        cl = self.channels_last
        x = _tensor(image, device, non_blocking, cl)
        y = _tensor(label, device, non_blocking)
        weak = _tensor(unlabeled[self.image_key], device, non_blocking, cl)
        self._mark_step()
        if self.device_views is not None:  # strong views and boxes made here, batched, from the weak views
            unlabeled = self.device_views({self.image_key: weak})
            if mix is not None:
                mix = self.device_views({self.image_key: _tensor(mix[self.image_key], device, non_blocking, cl)})
        strong1 = _tensor(unlabeled[self.strong_keys[0]], device, non_blocking, cl)
        strong2 = _tensor(unlabeled[self.strong_keys[1]], device, non_blocking, cl)
        num_labeled, num_unlabeled = x.shape[0], weak.shape[0]
        threshold = float(self.confidence_threshold(engine.state.iteration))
        network = engine.network

        boxes: list[torch.Tensor] = []
        mix_teacher = mix_weak_fp = mix_strong_fp = None
        if mix is not None:
            mix_weak = _tensor(mix[self.image_key], device, non_blocking, cl)
            if mix_weak.shape[0] != num_unlabeled:
                raise ValueError(
                    f"the mix batch has {mix_weak.shape[0]} items but the unlabeled batch {num_unlabeled}: use the "
                    "same batch size and drop_last=True for both loaders."
                )
            for key in self.box_keys:
                box = _tensor(unlabeled[key], device, non_blocking)
                boxes.append(box[:, 0] if box.ndim == weak.ndim else box)  # (B, *spatial)
            # P1 and P2: pseudo-labels of the mix image, no gradient.
            with self._teacher(network):
                if not self.merge_teacher_passes:
                    mix_teacher = PseudoLabel.from_logits(self._forward(network, mix_weak))
                if self.teacher_batch == "labeled_and_mix":
                    out = self._forward(network, torch.cat([x, mix_weak]), perturbed=num_unlabeled)
                    _, mix_clean_logits, mix_weak_fp_logits, mix_strong_fp_logits = out.split(
                        [num_labeled, num_unlabeled, num_unlabeled, num_unlabeled]
                    )
                else:
                    out = self._forward(network, mix_weak, perturbed=num_unlabeled)
                    mix_clean_logits, mix_weak_fp_logits, mix_strong_fp_logits = out.split([num_unlabeled] * 3)
                if self.merge_teacher_passes:
                    mix_teacher = PseudoLabel.from_logits(mix_clean_logits)
                mix_weak_fp = PseudoLabel.from_logits(mix_weak_fp_logits)
                mix_strong_fp = PseudoLabel.from_logits(mix_strong_fp_logits)
                del out, mix_clean_logits, mix_weak_fp_logits, mix_strong_fp_logits
            # CutMix of the strong views (the box broadcast over channels).
            mix_strong = [_tensor(mix[key], device, non_blocking, cl) for key in self.strong_keys]
            strong1 = torch.where(boxes[0].unsqueeze(1).bool(), mix_strong[0], strong1)
            strong2 = torch.where(boxes[1].unsqueeze(1).bool(), mix_strong[1], strong2)

        engine.state.output = {Keys.IMAGE: image, Keys.LABEL: label}
        network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        loss_function = cast(CrossMatchLoss, engine.loss_function)
        split = self.backward_per_pass
        # P3: labeled + weak view, weak view feature-perturbed.
        with self._no_sync(network) if split else nullcontext():
            with self._autocast():
                out = self._forward(network, torch.cat([x, weak]), perturbed=num_unlabeled)
            pred_x, pred_weak, pred_weak_wfp, pred_weak_sfp = out.split(
                [num_labeled, num_unlabeled, num_unlabeled, num_unlabeled]
            )
            teacher = PseudoLabel.from_logits(pred_weak)
            weak_fp = PseudoLabel.from_logits(pred_weak_wfp)
            strong_fp = PseudoLabel.from_logits(pred_weak_sfp)
            terms = loss_function.labeled_and_weak_view_terms(
                labeled_logits=pred_x, labels=y, weak_view_weak_fp_logits=pred_weak_wfp,
                weak_view_strong_fp_logits=pred_weak_sfp, teacher=teacher, threshold=threshold,
            )
            if split:
                self._backward(loss_function.partial_loss(terms))
                terms = {name: value.detach() for name, value in terms.items()}
                pred_x = pred_x.detach()
                del out, pred_weak, pred_weak_wfp, pred_weak_sfp
        if mix_teacher is not None:
            teacher_mixed1 = teacher.mixed(boxes[0], mix_teacher)
            teacher_mixed2 = teacher.mixed(boxes[1], mix_teacher)
            weak_fp_mixed2 = weak_fp.mixed(boxes[1], mix_weak_fp)  # type: ignore[arg-type]
            strong_fp_mixed2 = strong_fp.mixed(boxes[1], mix_strong_fp)  # type: ignore[arg-type]
        else:
            teacher_mixed1 = teacher_mixed2 = teacher
            weak_fp_mixed2, strong_fp_mixed2 = weak_fp, strong_fp
        # P4: both strong views, view 2 feature-perturbed.
        with self._autocast():
            out = self._forward(network, torch.cat([strong1, strong2]), perturbed=num_unlabeled)
        pred_s1, pred_s2, pred_s2_wfp, pred_s2_sfp = out.split([num_unlabeled] * 4)
        engine.state.output[Keys.PRED] = pred_x
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        strong_terms = loss_function.strong_view_terms(
            strong1_logits=pred_s1, strong2_logits=pred_s2, strong2_weak_fp_logits=pred_s2_wfp,
            strong2_strong_fp_logits=pred_s2_sfp, teacher_mixed1=teacher_mixed1, teacher_mixed2=teacher_mixed2,
            weak_fp_mixed2=weak_fp_mixed2, strong_fp_mixed2=strong_fp_mixed2, threshold=threshold,
        )
        if split:
            backward_loss = loss_function.partial_loss(strong_terms)
            terms = loss_function.combine({**terms, **{k: v.detach() for k, v in strong_terms.items()}})
        else:
            terms = loss_function.combine({**terms, **strong_terms})
            backward_loss = terms["loss"]
        engine.state.output[Keys.LOSS] = terms["loss"]
        for name, value in terms.items():
            if name != "loss":
                engine.state.output[name] = value.detach()
        engine.state.output["confidence_threshold"] = torch.tensor(threshold)
        engine.state.output["mask_ratio"] = teacher.valid(threshold).float().mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._backward_and_step(engine, backward_loss)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
