"""The training module: its hand-written optimisation step clips gradients, and its epoch metrics are right."""

import lightning as L
import numpy as np
import pytest
import torch

from bench import data as bench_data
from bench.models import build_network
from bench.module import ClassifierModule, clip_gradients, make_optimizers, make_schedule, training_loader


def tiny_split(n=96, seed=0) -> bench_data.Split:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, size=n)
    return bench_data.Split(rng.integers(2, 50, size=lengths.sum()).astype(np.int32),
                            np.concatenate([[0], np.cumsum(lengths)]), rng.integers(0, 2, size=n))


def fit_one_epoch(module, split, batch_size=32, validations=1, callbacks=(), precision="32-true"):
    train = training_loader(split, batch_size, seed=0, validations=validations)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, precision=precision,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        val_check_interval=len(train) // validations, callbacks=list(callbacks))
    trainer.fit(module, train, bench_data.loader(split, 96, shuffle=False))
    return trainer.callback_metrics


def test_gradients_are_clipped():
    torch.manual_seed(0)
    module = ClassifierModule(build_network("averaging", 50), lr=1e-2, weight_decay=0.0, grad_clip=1e-3)
    norms, configure = [], module.configure_optimizers

    def configure_and_watch():  # records the gradient norm before each step, after clipping
        optimizer = configure()
        optimizer.register_step_pre_hook(
            lambda *_: norms.append(torch.nn.utils.get_total_norm([p.grad for p in module.parameters()]).item()))
        return optimizer

    module.configure_optimizers = configure_and_watch
    fit_one_epoch(module, tiny_split())
    assert len(norms) == 3 and max(norms) <= 1e-3 * 1.001


def sparse_and_dense_averaging():
    """Two copies of one averaging network, but that one's table takes sparse updates, and a batch touching a few
    of its rows, several twice."""
    torch.manual_seed(0)
    dense = build_network("averaging", 50, embed_dim=4, bigram_buckets=64)
    sparse = build_network("averaging", 50, embed_dim=4, bigram_buckets=64, sparse_updates=True)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse, torch.tensor([[5, 9, 5, 9, 3], [7, 7, 0, 0, 0]]), torch.tensor([5, 2])


def test_sparse_updates_take_the_same_first_step_as_dense_adamw_and_move_only_touched_rows():
    """Lazy Adam (SparseAdam) stands for AdamW on a sparse table: with no decay, the first steps are the same."""
    dense, sparse, ids, lengths = sparse_and_dense_averaging()
    before = dense.embedding.weight.detach().clone()
    for network in (dense, sparse):
        optimizers = make_optimizers(network, lr=0.1, weight_decay=0.0)
        assert len(optimizers) == (2 if network is sparse else 1)
        network(ids, lengths).sum().backward()
        clip_gradients(list(network.parameters()), 0.5)
        for optimizer in optimizers:
            optimizer.step()
    assert torch.allclose(dense.embedding.weight, sparse.embedding.weight, atol=1e-5)
    assert torch.allclose(dense.head[1].weight, sparse.head[1].weight)
    moved = (sparse.embedding.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert 5 in moved and 7 in moved and 0 not in moved and len(moved) < 12


def test_clipping_a_sparse_gradient_clips_the_dense_gradients_norm():
    dense, sparse, ids, lengths = sparse_and_dense_averaging()
    for network in (dense, sparse):
        (network(ids, lengths) * 100).sum().backward()
        clip_gradients(list(network.parameters()), 0.5)
    clipped = [torch.cat([(p.grad.to_dense() if p.grad.is_sparse else p.grad).flatten() for p in n.parameters()])
               for n in (dense, sparse)]
    assert clipped[0].norm() == pytest.approx(0.5, rel=1e-4) and torch.allclose(*clipped, atol=1e-7)


def test_training_metrics_cover_every_training_text():
    split = tiny_split()
    torch.manual_seed(0)
    network = build_network("averaging", 50)
    ids, lengths, labels = bench_data.Batches(split)[np.arange(len(split))]
    with torch.no_grad():  # lr 0 leaves the weights as they are: the epoch's metrics are those of these logits
        logits = network(ids, lengths)
    metrics = fit_one_epoch(ClassifierModule(network, lr=0.0, weight_decay=0.0, grad_clip=None), split)
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    assert torch.isclose(metrics["train/loss"], expected_loss, atol=1e-5)
    assert metrics["train/acc"] == ((logits > 0).long() == labels).float().mean()
    epoch_tokens = metrics["train/tokens_per_s"] * metrics["train/epoch_time_s"]
    assert torch.isclose(epoch_tokens, torch.tensor(float(lengths.sum())), rtol=1e-4)


class Record(L.Callback):
    def __init__(self):
        self.points = []

    def on_validation_end(self, trainer, pl_module):
        self.points.append((trainer.is_last_batch, {k: float(v) for k, v in trainer.callback_metrics.items()}))


def test_validations_within_an_epoch_are_evenly_spaced_and_the_last_closes_it():
    split, record = tiny_split(), Record()
    torch.manual_seed(0)
    module = ClassifierModule(build_network("averaging", 50), lr=1e-2, weight_decay=0.0, grad_clip=None)
    fit_one_epoch(module, split, batch_size=8, validations=3, callbacks=[record])
    assert [closes for closes, _ in record.points] == [False, False, True]
    elapsed = [m["time/elapsed_s"] for _, m in record.points]
    assert elapsed == sorted(elapsed)
    assert "train/epoch_time_s" in record.points[-1][1]
    # Each validation's training metrics cover the texts since the one before: 4 of the 12 batches of 8.
    assert all(m["cost/train_flops"] > 0 for _, m in record.points)
    flops = [m["cost/train_flops"] for _, m in record.points]
    assert flops[2] == pytest.approx(flops[0] * 3, rel=0.3)


def test_warmup_cosine_rises_to_the_rate_then_falls_to_zero_at_the_cap():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = make_schedule(optimizer, "warmup_cosine", total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] < 0.1 / 4 and max(rates) == pytest.approx(0.1)  # warmup: 5 steps
    assert rates.index(max(rates)) == 4 and all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert rates[-1] < 1e-3 and make_schedule(optimizer, "constant", 100) is None


def test_the_schedule_steps_once_per_optimiser_step():
    torch.manual_seed(0)
    split = tiny_split()
    module = ClassifierModule(build_network("averaging", 50), lr=1e-2, weight_decay=0.0, grad_clip=None,
                              lr_schedule="warmup_cosine", total_steps=3)
    fit_one_epoch(module, split, batch_size=32)  # 96 texts: 3 steps, the whole cap
    assert module.schedules[0].last_epoch == 3 and module.schedules[0].get_last_lr()[0] == pytest.approx(0.0)


@pytest.mark.parametrize("arch", ["simple_rnn", "gru", "lstm", "bilstm", "bag_concat"])
def test_bf16_mixed_trains_on_the_cpu_with_float32_weights(arch):
    """Forced bf16 on the CPU (config precision): autocast's bf16 products and kernels.py's float32 loops mix."""
    torch.manual_seed(0)
    module = ClassifierModule(build_network(arch, 50, embed_dim=8, hidden_size=8), lr=1e-2, weight_decay=0.0,
                              grad_clip=1.0)
    before = [p.detach().clone() for p in module.parameters()]
    metrics = fit_one_epoch(module, tiny_split(), precision="bf16-mixed")
    assert torch.isfinite(metrics["train/loss"]) and 0.0 <= float(metrics["val/acc"]) <= 1.0
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))  # it trained

