"""Sanity check for saliency maps (Adebayo et al. 2018, "Sanity checks for saliency maps").

A map that explains the model must change when the model's weights are destroyed. Cascading
randomization: starting from the top (the output layer), the weights of one more block at a time
are replaced by a fresh initialization, down to the first block (with the stem); after each step
the maps of the same images, for the same classes, are compared with the trained model's by
their Spearman rank correlation. A method whose maps stay correlated with the trained ones once
every weight is random shows the input's structure (edges, contrast), not what the model learned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from petvision.models import xla

MapsFn = Callable[[keras.Model], Mapping[str, np.ndarray]]  # model -> method -> maps (N, H, W)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0 of the flattened ``values``, ties given their average rank."""
    _, inverse, count = np.unique(
        np.asarray(values).ravel(), return_inverse=True, return_counts=True
    )
    first = np.cumsum(count) - count
    return (first + (count - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps. NaN if ``a`` (the trained model's map) is constant:
    there is nothing to compare; 0 if only ``b`` is (a blank map kept none of ``a``'s order)."""
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0:
        return float("nan")
    if rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def cascade_groups(model: keras.Model, blocks: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The layers with trainable weights, grouped top down for the cascade: ``output`` (the layers
    after the last block output), then each block output with the layers since the previous one
    (the first block's group holds the stem)."""
    names = [layer.name for layer in model.layers]
    missing = [b for b in blocks if b not in names]
    if missing:
        raise ValueError(f"{model.name} has no layer {missing[0]!r}")
    ends = sorted(names.index(b) for b in blocks)
    groups: dict[str, list[str]] = {"output": []}
    groups.update({names[e]: [] for e in reversed(ends)})
    for position, layer in enumerate(model.layers):
        if not layer.trainable_weights:
            continue
        owner = next((names[e] for e in ends if position <= e), "output")
        groups[owner].append(layer.name)
    return [(name, layers) for name, layers in groups.items() if layers]


def cascade(
    model: keras.Model, blocks: Sequence[str], maps_fn: MapsFn, seed: int, keep: int = 0
) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """Cascading randomization of ``model`` (left untouched: a copy is randomized) with fresh
    weights drawn from ``seed``, which must not be the seed the model was trained from. ``maps_fn``
    gives each method's maps for the fixed images and classes. Returns the mean rank correlation
    with the trained maps per method and step, and the first ``keep`` images' maps per method:
    trained, then after each step."""
    keras.utils.set_random_seed(seed)
    # Same layers, freshly initialized weights. A clone is compiled as it is made, with new
    # augmentation layers that Keras marks not compilable (its warning), as a loaded model is:
    # xla.allow lifts that, or on JAX every pass over the copy would run op by op.
    with xla.loading():
        fresh = xla.allow(keras.models.clone_model(model))
        work = xla.allow(keras.models.clone_model(model))
    work.set_weights(model.get_weights())
    trained = {name: np.asarray(m) for name, m in maps_fn(work).items()}
    kept = {name: [m[:keep]] for name, m in trained.items()}
    steps: dict[str, dict[str, float]] = {name: {} for name in trained}
    for i, (group, layer_names) in enumerate(cascade_groups(model, blocks), start=1):
        for layer_name in layer_names:
            work.get_layer(layer_name).set_weights(fresh.get_layer(layer_name).get_weights())
        for name, maps in maps_fn(work).items():
            rho = np.array([spearman(a, b) for a, b in zip(trained[name], maps, strict=True)])
            rho = rho[~np.isnan(rho)]
            steps[name][f"{i}_{group}"] = float(rho.mean()) if len(rho) else float("nan")
            kept[name].append(np.asarray(maps)[:keep])
    return {"images": len(next(iter(trained.values()), [])), "rank_correlation": steps}, kept


def survivors(result: Mapping, max_correlation: float) -> list[str]:
    """The methods whose maps keep a mean rank correlation of at least ``max_correlation`` with the
    trained model's once every weight is random (the last step of the cascade)."""
    found = []
    for name, by_step in result["rank_correlation"].items():
        if by_step:
            last = list(by_step.values())[-1]
            if np.isfinite(last) and last >= max_correlation:
                found.append(name)
    return found
