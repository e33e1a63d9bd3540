"""benchmarks/bit_identity.py reads both checkpoint formats into the same states, and tells a difference apart."""

import sys

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import bit_identity  # noqa: E402


def formats(w):
    """The same training state as a format-2 checkpoint (nested, counters) and a format-3 one (flat)."""
    G, opt = {"w": torch.tensor([1.0, w])}, {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3}]}
    rng = {"torch": torch.arange(3, dtype=torch.uint8), "python": (3, (1, 2), None)}
    old = {"counters": (5, 7, None, None), "models": {"G": G}, "optimizers": {"G": opt}, "rng": rng, "args": {}}
    new = {"step": 5, "batches_used": 7, "fids": [], "G": G, "opt_G": opt, "rng": rng, "args": {}, "format": 3}
    return old, new


def test_both_formats_give_the_same_states_and_a_change_is_seen():
    old, new = formats(2.0)
    a, b = bit_identity.states(old), bit_identity.states(new)
    assert a.keys() == b.keys() and all(bit_identity.same(a[k], b[k]) for k in a)
    assert {
        "step",
        "models/G/w",
        "optimizers/G/state/0/exp_avg",
        "optimizers/G/param_groups/0/lr",
        "rng/torch",
    } <= a.keys()
    changed = bit_identity.states(formats(2.5)[1])
    assert not bit_identity.same(a["models/G/w"], changed["models/G/w"])
    assert not bit_identity.same(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))  # dtype counts
