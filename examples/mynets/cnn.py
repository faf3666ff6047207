"""A 1-D convolutional text classifier (Kim 2014, "Convolutional Neural Networks for Sentence Classification"),
written as any user would, against bench's contract: built as `TextCNN(vocab_size, num_classes, **searchable)`,
`forward(ids, lengths)` returns one logit per text for two classes (the positive class's), else one per class."""

from __future__ import annotations

import torch
from torch import nn


class TextCNN(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 128, kernels: int = 3, filters: int = 100,
                 dropout: float = 0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        # Widths kernels, kernels + 1, kernels + 2, as Kim's 3, 4, 5.
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k, padding=k - 1) for k in range(kernels, kernels + 3))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(3 * filters, 1 if num_classes == 2 else num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).transpose(1, 2)  # (batch, embed, time)
        positions = torch.arange(ids.shape[1] + 2 * self.convs[-1].padding[0], device=ids.device)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))  # (batch, filters, time + k - 1)
            # Max over the windows that touch a real token only: right-padding never changes a prediction.
            real = positions[: h.shape[2]] < (lengths.to(ids.device) + conv.kernel_size[0] - 1).unsqueeze(1)
            pooled.append(h.masked_fill(~real.unsqueeze(1), float("-inf")).amax(dim=2))
        logits = self.out(self.dropout(torch.cat(pooled, dim=1)))
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
