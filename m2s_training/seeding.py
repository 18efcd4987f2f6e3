"""Where a run's randomness comes from, so that a resumed run repeats an uninterrupted one exactly.

The global RNGs are seeded once at setup and saved in every ``last.pt``; everything drawn during
training that a resume would otherwise replay differently (loader worker seeds, distillation
sampling) comes from a generator of its own, keyed by the seed and the step or epoch.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seeded_generator(seed: int, *keys: int) -> torch.Generator:
    """A torch generator of its own for (seed, keys), independent of the global RNG."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    # plain values only, so inference can still read the checkpoint with torch.load(weights_only=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
