"""The architecture contract, one test parametrised over every registered architecture."""

import pytest
import torch

from bench.models import ARCHITECTURES, RECURRENT, build_network, reverse_within_length

VOCAB = 50
PARAMS = {"bag_concat": {"bag_len": 12}}


def network(arch, **extra):
    torch.manual_seed(0)
    return build_network(arch, VOCAB, **{"embed_dim": 8, "hidden_size": 8, **PARAMS.get(arch, {}), **extra})


def batch(rows):
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, lengths


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_contract(arch):
    net = network(arch, num_layers=2) if arch in RECURRENT else network(arch)
    net.eval()
    text = [5, 9, 3, 7]
    others = [[4, 4, 8, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19], [6], [2, 3]]

    # Shapes: one logit per text.
    ids, lengths = batch([text] + others)
    out = net(ids, lengths)
    assert out.shape == (4,)

    # Padding never changes a prediction: alone vs inside a batch padded to a longer length.
    alone = net(*batch([text]))
    assert torch.allclose(alone, out[:1], atol=1e-5)
    padded = torch.nn.functional.pad(ids, (0, 7))
    assert torch.allclose(net(padded, lengths), out, atol=1e-5)

    # Gradients reach the embedding.
    net.train()
    net(ids, lengths).sum().backward()
    embedding = next(m for m in net.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)))
    assert embedding.weight.grad is not None and embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_overfits_tiny_separable_set(arch):
    torch.manual_seed(0)
    rows = [[int(x) for x in torch.randint(10, VOCAB, (int(torch.randint(3, 9, ())),))] for _ in range(32)]
    labels = torch.tensor([i % 2 for i in range(32)])
    for row, label in zip(rows, labels):
        row.insert(int(torch.randint(0, len(row), ())), 2 + int(label))  # token 2 or 3 decides the class
    ids, lengths = batch(rows)
    net = network(arch)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(ids, lengths), labels.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    accuracy = ((net(ids, lengths) > 0).long() == labels).float().mean()
    assert accuracy == 1.0, f"{arch} reached {accuracy:.2f} on a separable set"


def test_reverse_within_length_keeps_padding_at_the_end():
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_within_length(x, torch.tensor([3, 1]))
    assert out.squeeze(-1).tolist() == [[2, 1, 0, 3], [4, 5, 6, 7]]


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'cnn'; available: averaging, bag_concat"):
        build_network("cnn", VOCAB)


@pytest.mark.parametrize("ngrams", [{"bigram_buckets": 64}, {"trigram_buckets": 64},
                                    {"bigram_buckets": 64, "trigram_buckets": 64}])
def test_averaging_with_ngrams_sees_word_order_and_ignores_padding(ngrams):
    plain, hashed = network("averaging").eval(), network("averaging", **ngrams).eval()
    text, shuffled = [5, 9, 3], [3, 9, 5]
    assert torch.allclose(plain(*batch([text])), plain(*batch([shuffled])))  # order-blind without n-grams
    assert not torch.allclose(hashed(*batch([text])), hashed(*batch([shuffled])), atol=1e-6)
    ids, lengths = batch([text, [4, 4, 8, 2, 6, 11]])
    assert torch.allclose(hashed(*batch([text])), hashed(ids, lengths)[:1], atol=1e-6)


def test_word_dropout_leaves_tokens_out_in_training_only():
    net = network("averaging", bigram_buckets=64, word_dropout=0.5)
    ids, lengths = batch([[5, 9, 3, 7, 11, 4, 8, 2]])
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(ids, lengths), net(ids, lengths))
        net.train()
        assert len({float(net(ids, lengths)) for _ in range(8)}) > 1
