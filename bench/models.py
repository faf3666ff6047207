"""The six text classifiers, token ids and lengths in, logits out (one per text for two classes, K for K > 2), and
the `ARCHITECTURES` registry that a sweep config adds its user's networks to (`user_architectures`,
docs/your-own.md).

Batches are right-padded with id 0. Every network reads only the real tokens of each text, so padding
never changes a prediction. Recurrent networks run unpacked over length-bucketed batches and read each text's
state at its own last real token: on a GPU through cuDNN, on the CPU through oneDNN's LSTM and kernels.py's
SimpleRNN and GRU.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bench.data import PAD_ID
from bench.kernels import fast_path, run_layers


def keras_init_(module: nn.Module) -> None:
    """Keras' default initialisation, which trains these models far faster than PyTorch's defaults:
    embeddings U(-0.05, 0.05), Glorot-uniform input kernels, orthogonal recurrent kernels, zero biases
    and an LSTM forget-gate bias of 1."""
    for m in module.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            nn.init.uniform_(m.weight, -0.05, 0.05)
            with torch.no_grad():
                m.weight[PAD_ID].zero_()
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.RNNBase):
            gates = {nn.LSTM: 4, nn.GRU: 3}.get(type(m), 1)
            for name, p in m.named_parameters():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                elif name.startswith("weight_hh"):
                    for chunk in p.data.chunk(gates, dim=0):
                        nn.init.orthogonal_(chunk)
                elif name.startswith("bias"):
                    nn.init.zeros_(p)
                    if isinstance(m, nn.LSTM) and name.startswith("bias_ih"):
                        p.data[m.hidden_size : 2 * m.hidden_size] = 1.0  # gate order i, f, g, o


def logit_count(num_classes: int) -> int:
    """Two classes: one logit (BCE), so that binary results and checkpoints stay as they were; K > 2: K logits."""
    return 1 if num_classes == 2 else num_classes


def mlp_head(in_features: int, hidden_size: int, dropout: float, num_classes: int) -> nn.Sequential:
    """Optional hidden ReLU layer, then the logits."""
    if hidden_size == 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, logit_count(num_classes)))
    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_features, hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, logit_count(num_classes)),
    )


class Averaging(nn.Module):
    """Mean of the embeddings of the real tokens -> optional hidden layer -> logit (order-blind).

    With `bigram_buckets` > 0 each pair of neighbouring real tokens is one more token, hashed into that many
    extra embedding rows (fastText's bigrams): the mean then sees local word order, e.g. "not good";
    `trigram_buckets` does the same for triples. `sparse_updates`: the optimiser updates only the rows a batch
    touches (module.py's SparseAdam), so that a step's cost no longer grows with the table. `word_dropout`: in
    training, each token and n-gram is left out of the mean with this probability (DAN's, Iyyer et al. 2015).
    """

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 64, hidden_size: int = 0,
                 dropout: float = 0.0, bigram_buckets: int = 0, trigram_buckets: int = 0,
                 sparse_updates: bool = False, word_dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.bigram_buckets, self.trigram_buckets = vocab_size, bigram_buckets, trigram_buckets
        self.word_dropout = word_dropout
        # EmbeddingBag averages without building the (batch, time, dim) tensor; padding_idx is left out.
        self.embedding = nn.EmbeddingBag(vocab_size + bigram_buckets + trigram_buckets, embed_dim, mode="mean",
                                         padding_idx=PAD_ID, sparse=sparse_updates)
        self.head = mlp_head(embed_dim, hidden_size, dropout, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        tokens = [ids]
        # Right padding: an n-gram is real when its last token is.
        if self.bigram_buckets:
            pairs = (ids[:, :-1] * 1_000_003 + ids[:, 1:]) % self.bigram_buckets + self.vocab_size
            tokens.append(torch.where(ids[:, 1:] != PAD_ID, pairs, PAD_ID))
        if self.trigram_buckets:
            triples = ((ids[:, :-2] * 1_000_003 + ids[:, 1:-1]) * 1_000_003 + ids[:, 2:]) % self.trigram_buckets
            tokens.append(torch.where(ids[:, 2:] != PAD_ID, triples + self.vocab_size + self.bigram_buckets, PAD_ID))
        tokens = torch.cat(tokens, dim=1) if len(tokens) > 1 else ids
        if self.training and self.word_dropout:
            tokens = tokens.masked_fill(torch.rand(tokens.shape, device=tokens.device) < self.word_dropout, PAD_ID)
        if not self.embedding.sparse:
            return self.head(self.embedding(tokens)).squeeze(-1)
        # Each distinct row looked up once: the sparse gradient then holds one row per distinct token, already
        # sorted, which SparseAdam merges without a sort of every occurrence.
        rows, tokens = torch.unique(tokens, return_inverse=True)
        weight = nn.functional.embedding(rows, self.embedding.weight, sparse=True)
        padding = 0 if rows[0] == PAD_ID else None  # rows are sorted: padding, if any, is the first
        return self.head(nn.functional.embedding_bag(tokens, weight, mode="mean", padding_idx=padding)).squeeze(-1)


class BagConcat(nn.Module):
    """Embeddings of the first `bag_len` tokens, concatenated in order -> MLP -> logit (fixed window)."""

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 32, bag_len: int = 64,
                 hidden_size: int = 64, dropout: float = 0.0):
        super().__init__()
        self.bag_len = bag_len
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.head = mlp_head(bag_len * embed_dim, hidden_size, dropout, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ids = ids[:, : self.bag_len]
        ids = nn.functional.pad(ids, (0, self.bag_len - ids.shape[1]), value=PAD_ID)
        return self.head(self.embedding(ids).flatten(1)).squeeze(-1)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's real steps (dimension 1) in place, leaving its padding at the end."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


class Recurrent(nn.Module):
    """Embedding -> recurrent layers -> the state at each text's last real token -> logit.

    Bidirectional: each layer runs a forward RNN and a backward one over the reversed real tokens, so
    that the backward RNN, too, starts at a real token and never reads padding; the output is the forward
    state at the last real token joined with the backward state at the first.
    """

    CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

    def __init__(self, vocab_size: int, cell: str, bidirectional: bool = False, embed_dim: int = 64,
                 hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.0, num_classes: int = 2):
        super().__init__()
        rnn = self.CELLS[cell]
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        if bidirectional:
            sizes = [embed_dim] + [2 * hidden_size] * (num_layers - 1)
            self.forward_layers = nn.ModuleList(rnn(n, hidden_size, batch_first=True) for n in sizes)
            self.backward_layers = nn.ModuleList(rnn(n, hidden_size, batch_first=True) for n in sizes)
        else:
            self.rnn = rnn(embed_dim, hidden_size, num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), logit_count(num_classes))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, packed: bool = False) -> torch.Tensor:
        """packed: run each layer over pack_padded_sequence, the textbook way (perf.py's naive baseline); the
        predictions are the same."""
        run = self._run_packed if packed else self._run
        rows = torch.arange(ids.shape[0], device=ids.device)
        lengths = lengths.to(ids.device)
        last = lengths - 1
        # Embeddings are looked up time-major, the layout the recurrent layers compute in, and handed to them as
        # batch-first views; states are read through time-major views, so that their gradient is time-major too.
        # Neither way is a tensor copied between layouts.
        if not self.bidirectional:
            x = self.dropout(self.embedding(ids.t())).transpose(0, 1)
            state = run(self.rnn, x, lengths).transpose(0, 1)[last, rows]
            return self.head(self.dropout(state)).squeeze(-1)
        # The backward RNN reads each text's tokens reversed: its first layer's input is looked up reversed, cheaper
        # than reversing the embeddings. out_back: its outputs, in the order it reads the tokens.
        both = torch.stack([ids.t(), reverse_within_length(ids, lengths).t()])
        x, x_back = self.dropout(self.embedding(both)).transpose(1, 2).unbind(0)
        out_fwd = out_back = None
        for fwd, bwd in zip(self.forward_layers, self.backward_layers):
            if out_fwd is not None:  # a layer above the first reads both directions' outputs at each token
                x = self.dropout(torch.cat([out_fwd, reverse_within_length(out_back, lengths)], dim=-1))
                x_back = reverse_within_length(x, lengths)
            out_fwd, out_back = run(fwd, x, lengths), run(bwd, x_back, lengths)
        # The forward RNN's state at the last real token, the backward one's at the first (its own last step).
        state = torch.cat([out_fwd.transpose(0, 1)[last, rows], out_back.transpose(0, 1)[last, rows]], dim=-1)
        return self.head(self.dropout(state)).squeeze(-1)

    @staticmethod
    def _run(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Over the padding too: its outputs are never read. SimpleRNN and GRU on the CPU: kernels.py's layers.
        return run_layers(rnn, x) if fast_path(rnn, x) else rnn(x)[0]

    @staticmethod
    def _run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])[0]


def _recurrent(cell: str, bidirectional: bool = False):
    def make(vocab_size, num_classes=2, embed_dim=64, hidden_size=64, num_layers=1, dropout=0.0) -> Recurrent:
        return Recurrent(vocab_size, cell, bidirectional, embed_dim, hidden_size, num_layers, dropout, num_classes)

    return make


RECURRENT = {"simple_rnn": _recurrent("rnn"), "gru": _recurrent("gru"), "lstm": _recurrent("lstm"),
             "bilstm": _recurrent("lstm", bidirectional=True)}
# Every architecture by name, in the order reports list them: a constructor taking vocab_size and its searchable
# arguments.
ARCHITECTURES = {"averaging": Averaging, "bag_concat": BagConcat, **RECURRENT}


BUILT_IN = tuple(ARCHITECTURES)
# A user's architectures, registered from a sweep config: name -> (`module:Class`, its package folder or None), what
# a checkpoint records to import the class again.
USER_ARCHITECTURES: dict[str, tuple[str, str | None]] = {}
BUILT_ARGUMENTS = {"vocab_size", "num_classes"}  # given by bench, not searched


def user_network_class(class_path: str, code: str | None) -> type[nn.Module]:
    """A user's network class, imported and held to the contract's signature. Raises ValueError naming the fault."""
    from bench.plugins import import_object

    network_class = import_object(class_path, code)
    if not (isinstance(network_class, type) and issubclass(network_class, nn.Module)):
        raise ValueError(f"{class_path} is not a torch.nn.Module class")
    missing = [a for a in sorted(BUILT_ARGUMENTS, reverse=True) if a not in inspect.signature(network_class).parameters]
    if missing:
        raise ValueError(f"{class_path}: its constructor takes no {' or '.join(missing)}; the contract is "
                         "Class(vocab_size, num_classes, **searchable)")
    return network_class


def register_architecture(name: str, class_path: str, code: str | None) -> None:
    """Add a user's network class to ARCHITECTURES under `name`."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in architecture's name; choose another")
    ARCHITECTURES[name] = user_network_class(class_path, code)
    USER_ARCHITECTURES[name] = (class_path, code)


def network_defaults(architecture: str) -> dict:
    """The default of each of the architecture's searchable arguments (its constructor's)."""
    parameters = inspect.signature(ARCHITECTURES[architecture]).parameters
    return {name: p.default for name, p in parameters.items()
            if p.default is not inspect.Parameter.empty and name not in BUILT_ARGUMENTS}


def build_network(architecture: str, vocab_size: int, num_classes: int = 2, **params) -> nn.Module:
    """The architecture's network; the built-in six with Keras' initialisation, a user's with its own."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; available: {', '.join(ARCHITECTURES)}")
    network = ARCHITECTURES[architecture](vocab_size, num_classes=num_classes, **params)
    if architecture not in USER_ARCHITECTURES:
        keras_init_(network)
    return network
