"""A Hugging Face text-classification model behind `EmotionAnalyzer`, for GPU deployments.

`TransformerEmotionModel` loads a fine-tuned classifier (for example one trained on
GoEmotions) from a local directory and maps its labels onto our seven with a label map.
Nothing is ever downloaded: the directory must exist and every loader is told
`local_files_only=True`, so a deployment runs exactly the weights that were reviewed and
shipped with it.

`transformers` and `torch` are optional and not dependencies of the platform: they are
imported only when a model is built, so CPU deployments (the learned model) never need them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.emotion.analyzer import EmotionModel, own_data_model
from services.emotion.model import LABELS, Matrix
from shared.events import EmotionAnalysis, EmotionLabel

log = logging.getLogger(__name__)

_L = EmotionLabel

# GoEmotions (Demszky et al., 2020) has 28 labels; we keep seven. Most map one to one. Where
# the mapping is a judgement, the reason is given for a customer-service conversation:
#
#   source          -> ours                        why
#   annoyance       -> frustration                 low-grade friction with a process, not rage
#   disapproval     -> frustration .6, anger .4    "this is not right": mostly a complaint,
#                                                  sometimes hostile
#   disgust         -> anger                       "disgusting service" is aimed at us; our
#                                                  lexicon files "disgusted" under anger too
#   disappointment  -> sadness .6, frustration .4  let down; often the first step to frustration
#   embarrassment   -> sadness .5, anxiety .5      shame plus worry about the consequences
#   remorse         -> sadness                     "sorry, my mistake": a low, regretful state
#   curiosity       -> confusion .5, neutral .5    a question; may be plain information seeking
#   surprise        -> confusion .5, neutral .5    "I was charged what?": unexpected, not joyful
#   realization     -> neutral                     "oh, I see": understanding reached, no feeling
#   desire          -> neutral                     "I want to upgrade" is a request, not a feeling
#   admiration, amusement, approval, caring,       positive states; joy is our only positive
#   excitement, gratitude, love, optimism,         label, and the valence that matters when
#   pride, relief -> joy                           choosing a tone
GOEMOTIONS_TO_CBD: Mapping[str, Mapping[EmotionLabel, float]] = {
    "admiration": {_L.JOY: 1.0},
    "amusement": {_L.JOY: 1.0},
    "anger": {_L.ANGER: 1.0},
    "annoyance": {_L.FRUSTRATION: 1.0},
    "approval": {_L.JOY: 1.0},
    "caring": {_L.JOY: 1.0},
    "confusion": {_L.CONFUSION: 1.0},
    "curiosity": {_L.CONFUSION: 0.5, _L.NEUTRAL: 0.5},
    "desire": {_L.NEUTRAL: 1.0},
    "disappointment": {_L.SADNESS: 0.6, _L.FRUSTRATION: 0.4},
    "disapproval": {_L.FRUSTRATION: 0.6, _L.ANGER: 0.4},
    "disgust": {_L.ANGER: 1.0},
    "embarrassment": {_L.SADNESS: 0.5, _L.ANXIETY: 0.5},
    "excitement": {_L.JOY: 1.0},
    "fear": {_L.ANXIETY: 1.0},
    "gratitude": {_L.JOY: 1.0},
    "grief": {_L.SADNESS: 1.0},
    "joy": {_L.JOY: 1.0},
    "love": {_L.JOY: 1.0},
    "nervousness": {_L.ANXIETY: 1.0},
    "optimism": {_L.JOY: 1.0},
    "pride": {_L.JOY: 1.0},
    "realization": {_L.NEUTRAL: 1.0},
    "relief": {_L.JOY: 1.0},
    "remorse": {_L.SADNESS: 1.0},
    "sadness": {_L.SADNESS: 1.0},
    "surprise": {_L.CONFUSION: 0.5, _L.NEUTRAL: 0.5},
    "neutral": {_L.NEUTRAL: 1.0},
}
"""The 28 GoEmotions labels -> weights over our seven labels (each row sums to 1)."""

_NEUTRAL_COLUMN = LABELS.index(EmotionLabel.NEUTRAL)


class TransformerEmotionModel:
    """An `EmotionModel` backed by a local Hugging Face text-classification pipeline."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | int | None = None,
        batch_size: int = 32,
        label_map: Mapping[str, Mapping[EmotionLabel, float]] | None = None,
        pipeline_factory: Callable[..., Any] | None = None,
    ) -> None:
        """Load the classifier in `model_dir`; never downloads anything.

        `device` is passed to the pipeline (an index, "cpu", "cuda:1", ...); left as None with
        the real `transformers`, the first GPU is used when there is one. `label_map` maps the
        model's labels (matched case-insensitively) to weights over ours, GoEmotions by
        default; labels it lacks are ignored. `pipeline_factory`
        replaces `transformers.pipeline`, so tests can run without `transformers` or `torch`.
        """
        path = Path(model_dir)
        # A missing directory must fail here, clearly: handed to `transformers`, a path that
        # does not exist reads as a Hub model id and fails with a confusing network error.
        if not path.exists():
            raise FileNotFoundError(f"emotion model directory not found: {path}")
        if not path.is_dir():
            raise NotADirectoryError(f"emotion model path is not a directory: {path}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")

        if pipeline_factory is None:
            pipeline_factory, device = _transformers_pipeline(device)

        self.name = f"transformer:{path.name}"
        self.model_dir = path
        self.batch_size = batch_size
        self._weights = _weight_rows(GOEMOTIONS_TO_CBD if label_map is None else label_map)
        self._unmapped_seen: set[str] = set()
        self._pipe = pipeline_factory(
            "text-classification",
            model=str(path),
            tokenizer=str(path),
            device=device,
            # Passed on to the config, tokenizer and model loaders: read the directory only.
            model_kwargs={"local_files_only": True},
            # Weights we ship are reviewed; code in a model directory is not run.
            trust_remote_code=False,
        )

    def predict_proba(self, texts: Sequence[str], lexical: Sequence[EmotionAnalysis]) -> Matrix:
        """Probabilities, one row per text, columns in `model.LABELS` order.

        The transformer reads the text alone; `lexical` is accepted for the `EmotionModel`
        protocol (the analyzer still uses it for signals and sentiment).
        """
        if not texts:
            return np.zeros((0, len(LABELS)))
        outputs = self._pipe(list(texts), top_k=None, truncation=True, batch_size=self.batch_size)
        if len(outputs) != len(texts):
            raise RuntimeError(f"pipeline returned {len(outputs)} results for {len(texts)} texts")
        return np.vstack([self._row(output) for output in outputs])

    def _row(self, output: Any) -> Matrix:
        # With top_k=None a text yields a list of {"label", "score"}; some versions return a
        # bare dict when there is only one, so both are accepted.
        items = [output] if isinstance(output, Mapping) else output
        row = np.zeros(len(LABELS))
        for item in items:
            source = str(item["label"]).lower()
            score = float(item["score"])
            weights = self._weights.get(source)
            if weights is None:
                self._warn_unmapped(source)
                continue
            # Scores are probabilities (softmax or, for multi-label heads, sigmoid); a NaN or
            # negative one can only come from a broken model and adds nothing.
            if np.isfinite(score) and score > 0:
                row += score * weights
        total = row.sum()
        if total <= 0:
            # Nothing we recognise: say nothing rather than guess an emotion.
            row[:] = 0.0
            row[_NEUTRAL_COLUMN] = 1.0
            return row
        normalised: Matrix = row / total
        return normalised

    def _warn_unmapped(self, source: str) -> None:
        # Once per label: a model with labels the map lacks (say "LABEL_3", when the config has
        # no names) would otherwise flood the log on every message.
        if source not in self._unmapped_seen:
            self._unmapped_seen.add(source)
            log.warning("%s: model label %r is not in the label map; ignored", self.name, source)


def load_model_from_settings(kind: str, model_dir: str | None) -> EmotionModel | None:
    """The emotion model a deployment's settings ask for.

    "learned" gives None: `EmotionAnalyzer` then loads its shipped, hash-checked model.
    "own" trains the earlier model on the project's own examples only (for comparison).
    "transformer" loads `TransformerEmotionModel` from `model_dir`, which is then required.
    """
    choice = kind.strip().lower()
    if choice == "learned":
        return None
    if choice == "own":
        return own_data_model()
    if choice == "transformer":
        if not model_dir:
            raise ValueError("the transformer emotion model needs a model directory (model_dir)")
        return TransformerEmotionModel(model_dir)
    raise ValueError(
        f"unknown emotion model kind {kind!r}; expected 'learned', 'own' or 'transformer'"
    )


def _transformers_pipeline(device: str | int | None) -> tuple[Callable[..., Any], str | int]:
    """`transformers.pipeline` and the device to run on, or a clear error if not installed."""
    modules: dict[str, Any] = {}
    missing: list[str] = []
    # Imported here, not at the top: they are optional, heavy, and only GPU nodes have them.
    for name in ("transformers", "torch"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        raise RuntimeError(
            f"the transformer emotion model needs {names}, not installed here: install "
            "transformers and torch on the GPU node, or use the learned model"
        )
    if device is None:
        device = 0 if modules["torch"].cuda.is_available() else -1
    pipeline: Callable[..., Any] = modules["transformers"].pipeline
    return pipeline, device


def _weight_rows(label_map: Mapping[str, Mapping[EmotionLabel, float]]) -> dict[str, Matrix]:
    """Each source label's weights as a row in `LABELS` order, checked once at load."""
    rows: dict[str, Matrix] = {}
    for source, weights in label_map.items():
        row = np.zeros(len(LABELS))
        for label, weight in weights.items():
            target = EmotionLabel(label)  # also accepts the plain string values
            if not np.isfinite(weight) or weight < 0:
                raise ValueError(f"label map {source!r} -> {target.value}: bad weight {weight}")
            row[LABELS.index(target)] += weight
        rows[source.lower()] = row
    return rows
