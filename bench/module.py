"""The LightningModule that trains any registered network: loss, training and validation metrics, optimiser."""

from __future__ import annotations

import copy
import math
import time

import lightning as L
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from bench import data as bench_data
from bench import kernels

# Training batches per training_step call, about (the training loader's groups): Lightning's own work between two
# calls is paid once per group rather than once per step (docs/performance.md).
BATCHES_PER_CALL = 32


def training_loader(split: bench_data.Split, batch_size: int, seed: int, validations: int = 1):
    """The training batches, shuffled, in groups of about BATCHES_PER_CALL; the epoch's group count is a multiple of
    `validations`, so that validating every len(loader) // validations groups spaces them evenly, the last at the
    epoch's end."""
    batches = -(-len(split) // batch_size)
    validations = min(validations, batches)
    groups = validations * -(-batches // (validations * BATCHES_PER_CALL))
    return bench_data.loader(split, batch_size, shuffle=True, seed=seed, groups=groups)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, F1 and AUROC: binary ones for two classes; for K, micro accuracy (set explicitly: torchmetrics'
    default is macro, torchmetrics#2320), macro F1 and one-vs-rest macro AUROC."""
    if num_classes == 2:
        metrics = {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC()}
    else:
        metrics = {"acc": MulticlassAccuracy(num_classes, average="micro"),
                   "f1": MulticlassF1Score(num_classes, average="macro"),
                   "auroc": MulticlassAUROC(num_classes, average="macro")}
    return MetricCollection(metrics, prefix=prefix)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE on one logit per text, cross-entropy on K."""
    if logits.dim() == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    return nn.functional.cross_entropy(logits, labels)


def predicted(logits: torch.Tensor) -> torch.Tensor:
    return (logits > 0).long() if logits.dim() == 1 else logits.argmax(dim=-1)


def training_flops_per_token(network: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> float:
    """Floating-point operations of a training step (forward, loss, backward) per real token of the batch, counted
    by PyTorch's FlopCounterMode on a CPU copy of the network in eval mode (so that no random number is drawn).

    It counts matrix multiplications, which dominate every network but averaging, whose embedding means it does not
    count. The recurrent layers are torch.nn's, and oneDNN is off, while counting: fused kernels (kernels.py's,
    oneDNN's LSTM) hide their products from the counter.
    """
    counted = copy.deepcopy(network).cpu().float().eval()
    # Gradients on even inside Lightning's validation hooks, which run in inference mode.
    with (torch.inference_mode(False), torch.enable_grad(), torch.backends.mkldnn.flags(enabled=False),
          kernels.torch_nn_layers(), FlopCounterMode(display=False) as counter):
        logits = counted(ids.cpu(), lengths.cpu())
        classification_loss(logits, torch.zeros(len(logits), dtype=torch.long)).backward()
    return counter.get_total_flops() / float(lengths.sum())


def make_optimizers(network: nn.Module, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """AdamW over the parameters, fused: one kernel over all of them, much faster over large embedding tables on
    CPU too. A table with sparse gradients (an nn.Embedding or EmbeddingBag built with sparse=True) goes to a
    SparseAdam of its own: lazy Adam, which moves only the rows a batch touches and decays none."""
    sparse = {id(m.weight): m.weight for m in network.modules()
              if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse}
    dense = [p for p in network.parameters() if id(p) not in sparse]
    optimizers = [torch.optim.AdamW(dense, lr=lr, weight_decay=weight_decay, fused=True)] if dense else []
    if sparse:
        optimizers.append(torch.optim.SparseAdam(list(sparse.values()), lr=lr))
    return optimizers


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> None:
    """clip_grad_norm_, which takes no sparse gradient: such a gradient is coalesced first (a row's duplicates
    summed), so that the total is the dense gradient's norm."""
    sparse = [p for p in params if p.grad is not None and p.grad.is_sparse]
    if not sparse:
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    for p in sparse:
        p.grad = p.grad.coalesce()
    grads = [p.grad._values() if p.grad.is_sparse else p.grad for p in params if p.grad is not None]
    total = nn.utils.get_total_norm(grads)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int):
    """The learning-rate schedule, stepped once per optimiser step; None for a constant rate. warmup_cosine: linear
    warmup over the first 5% of `total_steps` (the epoch cap's), then cosine to zero at the cap."""
    if schedule == "constant":
        return None
    warmup = max(1, round(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ClassifierModule(L.LightningModule):
    """Trains, validates and tests one network; keeps the weights of its best validation epoch."""

    def __init__(self, network: nn.Module, lr: float, weight_decay: float, grad_clip: float | None,
                 num_classes: int = 2, lr_schedule: str = "constant", total_steps: int = 0):
        super().__init__()
        self.network = network
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.lr_schedule, self.total_steps = lr_schedule, total_steps
        self.schedules = []  # made with the optimisers; stepped in training_step (manual optimisation)
        # The step is written out in plain PyTorch in training_step: Lightning's automatic optimisation, and even
        # its manual_backward / optimizer.step wrappers, run every callback's hooks at each step. The cost: no
        # gradient scaling, so config.py allows only precisions that need none.
        self.automatic_optimization = False
        # Training metrics are computed once an epoch from what each step keeps, not updated at every step. The
        # loss is checked for NaN then too.
        self.train_loss = MeanMetric(nan_strategy="disable")
        # Of predicted classes, not logits, which torchmetrics would read as probabilities if all were in [0, 1].
        self.train_acc = BinaryAccuracy() if num_classes == 2 else MulticlassAccuracy(num_classes, average="micro")
        self._epoch_outputs: list[tuple[torch.Tensor, ...]] = []  # (loss, logits, labels, lengths) per step
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.val_acc_best = MaxMetric()
        self.best_state: dict | None = None  # weights of the best validation epoch, kept in memory
        self._fit_start = self._interval_start = 0.0
        self._interval_seconds = self._epoch_seconds = 0.0  # training seconds since the last validation, and this epoch
        self.tokens_trained = 0  # real tokens trained on so far
        self.flops_per_token: float | None = None  # of a training step, counted once, after the first epoch
        self._flops_batch: tuple[torch.Tensor, torch.Tensor] | None = None  # (ids, lengths) it is counted on

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.network(ids, lengths)

    def _step(self, batch):
        ids, lengths, labels = batch
        logits = self.network(ids, lengths).float()  # not self(...): one module call less per step
        return logits, labels, classification_loss(logits, labels)

    def on_fit_start(self):
        self._fit_start = time.perf_counter()

    def on_train_epoch_start(self):
        self._interval_start = time.perf_counter()
        self._epoch_seconds = 0.0
        self._epoch_outputs = []

    def training_step(self, batches, batch_idx):
        # BATCHES_PER_CALL batches per call, one optimiser step each: Lightning's per-call work is paid once a group.
        optimizers = self.optimizers()
        optimizers = [o.optimizer for o in (optimizers if isinstance(optimizers, list) else [optimizers])]
        # A list, made once per call: self.parameters() walks the metrics' modules too, at every step.
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        if self._flops_batch is None:
            self._flops_batch = batches[0][:2]
        for batch in batches:
            for optimizer in optimizers:
                optimizer.zero_grad()
            logits, labels, loss = self._step(batch)
            loss.backward()
            if self.grad_clip is not None:
                clip_gradients(params, self.grad_clip)
            for optimizer in optimizers:
                optimizer.step()
            for schedule in self.schedules:
                schedule.step()
            self._epoch_outputs.append((loss.detach(), logits.detach(), labels, batch[1]))

    def on_validation_epoch_start(self):
        if self.trainer.state.fn == "fit":  # validation closes a stretch of training: time it
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # the last steps may still be running
            self._interval_seconds = time.perf_counter() - self._interval_start
            self._epoch_seconds += self._interval_seconds

    def validation_step(self, batch, batch_idx):
        logits, labels, loss = self._step(batch)
        self.val_metrics.update(logits, labels)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))

    def on_validation_epoch_end(self):
        metrics = self.val_metrics.compute()
        self.val_metrics.reset()
        acc = metrics["val/acc"]
        if self.best_state is None or acc > self.val_acc_best.compute():
            self.best_state = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        self.val_acc_best.update(acc)
        self.log_dict(metrics)
        self.log("val/acc_best", self.val_acc_best.compute())
        # Training metrics of the steps since the last validation are logged here too, so that a pruned trial still
        # records them.
        if self.trainer.state.fn == "fit":
            self._log_training_interval()
        # Wall-clock seconds since fit start, for learning curves against time rather than epochs.
        self.log("time/elapsed_s", time.perf_counter() - self._fit_start)

    def on_validation_end(self):
        if self.trainer.state.fn == "fit":
            self._interval_start = time.perf_counter()  # validation time is not training time

    def _log_training_interval(self) -> None:
        losses, logits, labels, lengths = zip(*self._epoch_outputs)
        self._epoch_outputs = []
        self.train_loss.update(torch.stack(losses), torch.tensor([len(y) for y in labels], device=self.device))
        self.train_acc.update(predicted(torch.cat(logits)), torch.cat(labels))
        train_loss = self.train_loss.compute()
        if not torch.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss.item()} at epoch {self.current_epoch}")
        self.log("train/loss", train_loss)
        self.log("train/acc", self.train_acc.compute())
        if self.trainer.is_last_batch:  # this validation closes the epoch
            self.log("train/epoch_time_s", self._epoch_seconds)
        tokens = torch.cat(lengths).sum().item()
        self.tokens_trained += tokens
        self.log("train/tokens_per_s", tokens / self._interval_seconds)
        self._log_training_cost()
        self.train_loss.reset()
        self.train_acc.reset()

    def _log_training_cost(self) -> None:
        """A cost that does not depend on the machine: training FLOPs per token, and in all so far."""
        if self.flops_per_token is None:
            self.flops_per_token = training_flops_per_token(self.network, *self._flops_batch)
        self.log("cost/train_flops_per_token", self.flops_per_token)
        self.log("cost/train_flops", self.flops_per_token * self.tokens_trained)

    def restore_best(self) -> None:
        if self.best_state is not None:
            self.network.load_state_dict(self.best_state)

    def configure_optimizers(self):
        optimizers = make_optimizers(self.network, self.lr, self.weight_decay)
        self.schedules = [s for s in (make_schedule(o, self.lr_schedule, self.total_steps) for o in optimizers) if s]
        return optimizers[0] if len(optimizers) == 1 else optimizers
