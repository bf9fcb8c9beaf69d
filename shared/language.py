"""Which language a text is in, offline: py3langid's bundled model, for whoever needs it.

`py3langid` is the maintained fork of langid.py: a small model shipped inside the package,
deterministic, no download. Generation's voice check uses it to catch a reply in another
language than the customer's; emotion uses it to refuse only text that really is not English.
Only text long enough to identify is judged: a short sentence, a name or "OK" never is.

The bundled model is LZMA-compressed (4.6 MB to 68 MB): unpacking it took 1-3 s of every
emotion and generation start, so a restart after a crash waited for it. The unpacked arrays
are kept in a cache folder (`CBD_CACHE_DIR`, else `$XDG_CACHE_HOME/care-by-design`, else
`~/.cache/care-by-design`), named by the packed file's SHA-256 and checked against the
SHA-256 of each array written; a cache that cannot be written or read back intact is simply
not used (the model is unpacked as before).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import lzma
import os
import re
import shutil
import tempfile
from array import array
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from py3langid import langid

log = logging.getLogger(__name__)

MIN_LANGUAGE_LETTERS = 24
"""Fewer letters than this and the language is not judged: too short to identify."""
MIN_LANGUAGE_WORDS = 4
MIN_LANGUAGE_CONFIDENCE = 0.6
"""py3langid's normalised probability a text must reach before its language counts. At 0.6
(and at 0.5) none of Banking77's English test messages long enough to judge is taken for
another language, while an English prompt header leaked into a Portuguese reply (0.68) is
caught; the probabilities are tempered by text length, so 0.9 missed it."""
_LETTERS = re.compile(r"[^\W\d_]")


class LanguageIdentifier(Protocol):
    """Names a text's language (ISO 639-1) with a confidence; the check needs nothing else."""

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, probability 0-1)."""
        ...


MODEL_PATH = Path(langid.MODEL_DIR) / langid.MODEL_FILE
_ARRAYS = ("ptc", "pc", "classes", "nextmove", "nextmove_row", "out_feat")
_TYPECODES = {2: "H", 4: "I", 8: "L"}


class LangId:
    """py3langid's bundled model, normalised to probabilities."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        """Load the model, from the unpacked cache when there is a good one."""
        arrays = unpacked_model(cache_dir or default_cache_dir())
        self._model = langid.LanguageIdentifier(
            arrays["ptc"],
            arrays["pc"],
            arrays["classes"].tolist(),
            _stdlib_array(arrays["nextmove"]),
            arrays["out_feat"].tolist(),
            norm_probs=True,
            tk_row=_stdlib_array(arrays["nextmove_row"]),
        )

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, probability 0-1)."""
        lang, prob = self._model.classify(text)
        return str(lang), float(prob)


def default_cache_dir() -> Path:
    """Where unpacked models are kept between starts."""
    if explicit := os.environ.get("CBD_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "care-by-design"


def unpacked_model(cache_dir: Path, source: Path = MODEL_PATH) -> dict[str, npt.NDArray[Any]]:
    """The model's arrays (as py3langid's loader reads them), from the cache if it is intact."""
    packed = source.read_bytes()
    folder = cache_dir / f"py3langid-{hashlib.sha256(packed).hexdigest()[:32]}"
    try:
        return _read_cache(folder)
    except (OSError, ValueError, KeyError) as exc:
        log.info("language model unpacked (no usable cache in %s: %s)", folder, exc)
    with np.load(io.BytesIO(lzma.decompress(packed)), allow_pickle=False) as data:
        arrays = {name: data[name] for name in _ARRAYS}
    try:
        _write_cache(folder, arrays)
    except OSError as exc:
        log.info("language model cache not written to %s: %s", folder, exc)
    return arrays


def _read_cache(folder: Path) -> dict[str, npt.NDArray[Any]]:
    digests = json.loads((folder / "sha256.json").read_text(encoding="utf-8"))
    arrays = {}
    for name in _ARRAYS:
        data = (folder / f"{name}.npy").read_bytes()
        if hashlib.sha256(data).hexdigest() != digests[name]:
            raise ValueError(f"{name}.npy does not match its SHA-256")
        arrays[name] = _npy_view(data)
    return arrays


def _npy_view(data: bytes) -> npt.NDArray[Any]:
    """A read-only array over a `.npy` file's bytes, not a copy (68 MB here)."""
    header = io.BytesIO(data)
    version = np.lib.format.read_magic(header)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(header)
    else:
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(header)
    if fortran_order or dtype.hasobject:
        raise ValueError("the cache holds an array this loader does not read")
    return np.frombuffer(data, dtype=dtype, offset=header.tell()).reshape(shape)


def _write_cache(folder: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Written into a fresh folder and renamed into place: readers never see half of it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=folder.parent))
    try:
        digests = {}
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, value, allow_pickle=False)
            (staging / f"{name}.npy").write_bytes(buffer.getvalue())
            digests[name] = hashlib.sha256(buffer.getvalue()).hexdigest()
        (staging / "sha256.json").write_text(json.dumps(digests), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # a damaged earlier copy
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _stdlib_array(values: npt.NDArray[Any]) -> array[int]:
    """An unsigned numpy array as the stdlib array py3langid's tokenizer indexes."""
    out: array[int] = array(_TYPECODES[values.dtype.itemsize])
    out.frombytes(np.ascontiguousarray(values).tobytes())
    return out


@lru_cache(maxsize=1)
def default_identifier() -> LangId:
    """One identifier per process: its model takes a moment to unpack."""
    return LangId()


def identifiable(text: str) -> bool:
    """Whether a text is long enough for its language to be judged."""
    return len(_LETTERS.findall(text)) >= MIN_LANGUAGE_LETTERS and (
        len(text.split()) >= MIN_LANGUAGE_WORDS
    )


def language_of(text: str, identifier: LanguageIdentifier) -> str | None:
    """The text's language when it is long enough and the identifier is confident."""
    if not identifiable(text):
        return None
    lang, prob = identifier.identify(text)
    return lang if prob >= MIN_LANGUAGE_CONFIDENCE else None
