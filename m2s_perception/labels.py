"""The SemanticKITTI label map, loaded once from ``config/semantic-kitti.yaml``.

Vocabulary used across m2s:
- *raw id*: the id stored in SemanticKITTI ``.label`` files (e.g. 10 car, 252 moving-car);
- *training id*: 0..19, 0 = unlabeled (ignored by losses and metrics), 1..19 the classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from m2s_perception.resources import share_file

IGNORE_ID = 0
MAX_RAW_ID = 1 << 16


@dataclass(frozen=True)
class LabelMap:
    raw_names: dict[int, str]
    class_names: tuple[str, ...]  # index = training id; [0] is "unlabeled"
    raw_to_train_lut: np.ndarray  # (65536,) uint8; unknown raw ids map to IGNORE_ID
    train_to_raw_lut: np.ndarray  # (num_classes,) uint32
    train_rgb: np.ndarray  # (num_classes, 3) uint8 colours per training id
    raw_rgb_lut: np.ndarray  # (65536, 3) uint8 colours per raw id
    hard_classes: tuple[str, ...]
    split: dict[str, tuple[int, ...]]

    @property
    def num_classes(self) -> int:
        """Number of model outputs, including the ignored class 0."""
        return len(self.class_names)

    def to_train(self, raw_ids: np.ndarray) -> np.ndarray:
        """Map raw ids (any int array; instance bits must already be stripped) to training ids."""
        return self.raw_to_train_lut[np.asarray(raw_ids) & 0xFFFF]

    def to_raw(self, train_ids: np.ndarray) -> np.ndarray:
        return self.train_to_raw_lut[np.asarray(train_ids)]

    def class_id(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"unknown class {name!r}; known: {', '.join(self.class_names)}") from None

    def hard_class_ids(self, names: tuple[str, ...] | list[str] | None = None) -> tuple[int, ...]:
        return tuple(self.class_id(n) for n in (self.hard_classes if names is None else names))

    def sequences(self, split: str) -> tuple[str, ...]:
        """Sequence folder names (``"08"``) of a split: ``train``, ``valid``/``val`` or ``test``."""
        key = "valid" if split == "val" else split
        if key not in self.split:
            raise KeyError(f"unknown split {split!r}; known: {', '.join(self.split)}")
        return tuple(f"{s:02d}" for s in self.split[key])


def _bgr_to_rgb(bgr: list[int]) -> tuple[int, int, int]:
    return int(bgr[2]), int(bgr[1]), int(bgr[0])


def parse_label_map(doc: dict) -> LabelMap:
    raw_names = {int(k): str(v) for k, v in doc["labels"].items()}
    learning_map = {int(k): int(v) for k, v in doc["learning_map"].items()}
    inverse = {int(k): int(v) for k, v in doc["learning_map_inv"].items()}
    colors = {int(k): _bgr_to_rgb(v) for k, v in doc["color_map"].items()}
    num_classes = max(inverse) + 1
    if sorted(inverse) != list(range(num_classes)):
        raise ValueError("learning_map_inv must cover training ids 0..N-1 without gaps")
    for train_id, raw_id in inverse.items():
        if learning_map.get(raw_id) != train_id:
            raise ValueError(f"learning_map_inv[{train_id}] = {raw_id} does not map back to {train_id}")

    raw_to_train = np.full(MAX_RAW_ID, IGNORE_ID, dtype=np.uint8)
    for raw_id, train_id in learning_map.items():
        raw_to_train[raw_id] = train_id
    train_to_raw = np.array([inverse[t] for t in range(num_classes)], dtype=np.uint32)
    raw_rgb = np.zeros((MAX_RAW_ID, 3), dtype=np.uint8)
    for raw_id, rgb in colors.items():
        raw_rgb[raw_id] = rgb
    class_names = tuple(raw_names[inverse[t]] for t in range(num_classes))
    class_names = ("unlabeled", *class_names[1:])
    train_rgb = raw_rgb[train_to_raw]
    split = {k: tuple(int(s) for s in v) for k, v in doc.get("split", {}).items()}
    hard = tuple(doc.get("hard_classes", ()))
    label_map = LabelMap(raw_names, class_names, raw_to_train, train_to_raw, train_rgb, raw_rgb, hard, split)
    label_map.hard_class_ids()  # validate names early
    return label_map


def load_label_map(path: str | Path | None = None) -> LabelMap:
    """Load a label map YAML; ``None`` gives the packaged SemanticKITTI map (cached)."""
    if path is None:
        return _default_label_map()
    with open(path, encoding="utf-8") as f:
        return parse_label_map(yaml.safe_load(f))


@lru_cache(maxsize=1)
def _default_label_map() -> LabelMap:
    with open(share_file("config/semantic-kitti.yaml"), encoding="utf-8") as f:
        return parse_label_map(yaml.safe_load(f))
