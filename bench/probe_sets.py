"""The probes' sets, generated from a dataset and the seed alone: word-order minimal pairs, short reviews with neutral
filler for the memory probe, texts long enough for the gradient probe (bench/probes.py measures the models on them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.data import UNK_ID, EncodedDataset, Split

# Candidate sentiment adjectives; a dataset keeps those its own training texts confirm (`lexicon`).
POSITIVE_WORDS = ("great", "excellent", "wonderful", "amazing", "awesome", "fantastic", "brilliant", "superb",
                  "perfect", "beautiful", "lovely", "enjoyable", "delightful", "outstanding", "terrific", "fun",
                  "good", "nice", "incredible", "charming", "hilarious", "touching", "powerful", "stunning",
                  "memorable", "happy")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "horrible", "boring", "dull", "poor", "stupid", "pathetic", "lame",
                  "mediocre", "weak", "annoying", "disappointing", "dreadful", "ridiculous", "pointless", "awkward",
                  "tedious", "laughable", "predictable", "forgettable", "painful", "ugly", "sad", "worse")
# Minimal pairs (positive text, negative text): the same words, {p} and {n} swapped.
TEMPLATES = (
    ("{p} , not {n}", "{n} , not {p}"),
    ("i expected it to be {n} , but it was {p}", "i expected it to be {p} , but it was {n}"),
    ("it was not {n} at all , it was {p}", "it was not {p} at all , it was {n}"),
    ("{p} rather than {n}", "{n} rather than {p}"),
    ("far from {n} , it was really {p}", "far from {p} , it was really {n}"),
    ("at first it seemed {n} , but in the end it was {p}", "at first it seemed {p} , but in the end it was {n}"),
    ("not {n} , just {p}", "not {p} , just {n}"),
    ("it was {p} and not {n}", "it was {n} and not {p}"),
)
PAIRS_PER_TEMPLATE = 30  # word pairs drawn per template, without replacement
MIN_WORD_COUNT = 20  # training-text occurrences a lexicon word needs
MIN_POLARITY = 0.5  # |log-odds| a lexicon word needs, with the expected sign: 1.6 times likelier in its class
NEUTRAL_POLARITY = 0.2  # every token of a filler sentence is within 1.22 times as likely in either class
SENTENCE_TOKENS = (8, 40)  # a filler sentence's length
PART_TOKENS = 48  # the longest review a memory text starts (or ends) with
MEMORY_DISTANCES = (0, 25, 50, 100, 200, 400, 800)  # filler tokens; cut to what max_len leaves beside the review
MEMORY_MIN_LEN = 400  # the max_len a dataset needs for the memory probe: tweets (64 tokens) cannot hold the filler
MEMORY_TEXTS = 200  # at most; and at most half the split
GRADIENT_DISTANCES = (400, 200, 100, 50, 25, 12, 6)  # the largest that enough texts reach is measured
GRADIENT_TEXTS = (32, 128)  # at least, at most


def token_polarity(split: Split, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token's log-odds of occurring in a positive rather than a negative text of the split (add-one
    smoothed), and its count."""
    classes = np.repeat(split.labels, split.lengths)
    counts = [np.bincount(split.ids[classes == c], minlength=vocab_size) for c in (0, 1)]
    rates = [(c + 1) / (c.sum() + vocab_size) for c in counts]
    return np.log(rates[1] / rates[0]), counts[0] + counts[1]


@dataclass
class OrderSet:
    positive_words: list[str]
    negative_words: list[str]
    templates: list[int]  # the TEMPLATES whose every word the vocabulary holds
    pairs: pd.DataFrame  # template, positive (text), negative (text)


def lexicon(tokenizer, polarity: np.ndarray, counts: np.ndarray, words: tuple[str, ...], sign: int) -> list[str]:
    ids = [(w, tokenizer.token_to_id(w)) for w in words]
    return [w for w, i in ids if i is not None and counts[i] >= MIN_WORD_COUNT and sign * polarity[i] >= MIN_POLARITY]


def in_vocabulary(tokenizer, text: str) -> bool:
    return UNK_ID not in tokenizer.encode(text).ids


def order_set(data: EncodedDataset, polarity: np.ndarray, counts: np.ndarray, seed: int) -> OrderSet:
    """Minimal pairs from each template and a seeded draw of (positive, negative) word pairs."""
    tokenizer = data.tokenizer
    positive = lexicon(tokenizer, polarity, counts, POSITIVE_WORDS, 1)
    negative = lexicon(tokenizer, polarity, counts, NEGATIVE_WORDS, -1)
    templates = [i for i, (text, _) in enumerate(TEMPLATES) if in_vocabulary(tokenizer, text.format(p="", n=""))]
    combos = [(p, n) for p in positive for n in negative]
    rng = np.random.default_rng(seed)
    rows = []
    for i in templates:
        for j in rng.permutation(len(combos))[:PAIRS_PER_TEMPLATE]:
            p, n = combos[j]
            rows.append((i, TEMPLATES[i][0].format(p=p, n=n), TEMPLATES[i][1].format(p=p, n=n)))
    return OrderSet(positive, negative, templates, pd.DataFrame(rows, columns=["template", "positive", "negative"]))


def probe_split(data: EncodedDataset) -> tuple[str, Split]:
    """The test texts probes draw from: the held-out split where the dataset has one (Sentiment140's hand-labelled
    test set has 359 tweets), else the test split."""
    return ("heldout", data.heldout) if data.heldout is not None else ("test", data.test)


def texts_of(split: Split, rows) -> list[np.ndarray]:
    return [split.ids[split.offsets[i]:split.offsets[i + 1]] for i in rows]


def as_split(texts: list[np.ndarray], labels=None) -> Split:
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = np.zeros(len(texts), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return Split(np.concatenate(texts).astype(np.int32), offsets, labels)


@dataclass
class MemorySet:
    """Short reviews and a stream of neutral filler sentences; text i is review i with filler from sentence start
    starts[i] after it, or the filler ending there before it."""

    parts: list[np.ndarray]
    labels: np.ndarray
    filler: np.ndarray
    starts: np.ndarray
    sentences: int  # neutral sentences in the filler
    examples: list[str]  # the first few of them, for the report
    max_len: int

    def text(self, i: int, side: str, k: int) -> np.ndarray:
        part, start = self.parts[i], self.starts[i]
        k = min(k, self.max_len - len(part))
        if side == "after":  # the review first, the filler after it
            return np.concatenate([part, self.filler[start:start + k]])
        return np.concatenate([self.filler[start - k:start], part])


def neutral_sentences(split: Split, rows, polarity: np.ndarray, tokenizer) -> list[np.ndarray]:
    """The sentences (ended by . ! or ?) of the given texts with SENTENCE_TOKENS tokens, all in the vocabulary,
    none with a polarity of NEUTRAL_POLARITY or more, a digit (ratings: "10 out of 10" is neutral word by word) or
    an exclamation mark."""
    vocabulary = tokenizer.get_vocab()
    ends = np.array([i for s in ".!?" if (i := vocabulary.get(s)) is not None])
    excluded = np.abs(polarity) >= NEUTRAL_POLARITY
    excluded[[i for w, i in vocabulary.items() if "!" in w or any(c.isdigit() for c in w)]] = True
    excluded[UNK_ID] = True
    sentences = []
    for text in texts_of(split, rows):
        for sentence in np.split(text, np.flatnonzero(np.isin(text, ends)) + 1):
            if SENTENCE_TOKENS[0] <= len(sentence) <= SENTENCE_TOKENS[1] and not excluded[sentence].any():
                sentences.append(sentence)
    return sentences


def memory_set(data: EncodedDataset, max_len: int, polarity: np.ndarray, seed: int) -> tuple[MemorySet | None, str]:
    """The memory probe's texts, or None and why not."""
    if max_len < MEMORY_MIN_LEN:
        return None, f"max_len {max_len} < {MEMORY_MIN_LEN}: too short to hold the filler"
    _, split = probe_split(data)
    rng = np.random.default_rng(seed)
    short = np.flatnonzero(split.lengths <= PART_TOKENS)
    chosen = np.sort(rng.permutation(short)[:min(MEMORY_TEXTS, len(split) // 2)])  # the rest give the filler
    sentences = neutral_sentences(split, np.setdiff1d(np.arange(len(split)), chosen), polarity, data.tokenizer)
    sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    filler = np.concatenate(sentences) if sentences else np.zeros(0, dtype=np.int32)
    if len(chosen) == 0 or len(filler) < 3 * max_len:
        return None, (f"{len(chosen)} texts of at most {PART_TOKENS} tokens and {len(filler)} tokens of neutral "
                      f"filler; it needs some and {3 * max_len}")
    boundaries = np.cumsum([len(s) for s in sentences])[:-1]
    usable = boundaries[(boundaries >= max_len) & (boundaries <= len(filler) - max_len)]
    examples = [data.tokenizer.decode(s.tolist()) for s in sentences[:5]]
    return MemorySet(texts_of(split, chosen), split.labels[chosen], filler, rng.choice(usable, len(chosen)),
                     len(sentences), examples, max_len), ""


@dataclass
class GradientSet:
    texts: Split
    max_distance: int


def gradient_set(data: EncodedDataset, seed: int) -> tuple[GradientSet | None, str]:
    """The longest test texts, enough of them to reach the largest distance of GRADIENT_DISTANCES that they can."""
    _, split = probe_split(data)
    for distance in GRADIENT_DISTANCES:
        longer = np.flatnonzero(split.lengths > distance)
        if len(longer) >= GRADIENT_TEXTS[0]:
            rows = np.sort(np.random.default_rng(seed).permutation(longer)[:GRADIENT_TEXTS[1]])
            return GradientSet(as_split(texts_of(split, rows), split.labels[rows]), distance), ""
    return None, f"fewer than {GRADIENT_TEXTS[0]} texts longer than {GRADIENT_DISTANCES[-1]} tokens"


@dataclass
class ProbeSets:
    split: str  # the split the memory and gradient texts come from
    max_len: int
    order: OrderSet
    memory: MemorySet | None
    gradient: GradientSet | None
    notes: dict  # why a probe has no set

    def summary(self) -> dict:
        """What the report shows of the sets: their construction's outcome (probe_sets.json)."""
        order = self.order
        return {
            "split": self.split, "max_len": self.max_len,
            "order": {"positive_words": order.positive_words, "negative_words": order.negative_words,
                      "templates": [TEMPLATES[i] for i in order.templates], "pairs": len(order.pairs)},
            "memory": None if self.memory is None else {
                "texts": len(self.memory.parts), "sentences": self.memory.sentences,
                "filler_tokens": len(self.memory.filler), "filler_examples": self.memory.examples,
                "distances": list(MEMORY_DISTANCES)},
            "gradient": None if self.gradient is None else {"texts": len(self.gradient.texts),
                                                            "max_distance": self.gradient.max_distance},
            "notes": self.notes,
        }


def probe_sets(data: EncodedDataset, max_len: int, seed: int) -> ProbeSets:
    """Every probe's set, generated from the data and the seed alone."""
    polarity, counts = token_polarity(data.train, data.vocab_size)
    memory, memory_note = memory_set(data, max_len, polarity, seed)
    gradient, gradient_note = gradient_set(data, seed)
    notes = {k: v for k, v in (("memory", memory_note), ("gradient", gradient_note)) if v}
    return ProbeSets(probe_split(data)[0], max_len, order_set(data, polarity, counts, seed), memory, gradient, notes)
