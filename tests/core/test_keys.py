"""Feature keys: memoised per loaded model, equal to the unmemoised hash, never shared across models."""

from __future__ import annotations

import explorer.features.keys as keys
from explorer.features.keys import Selection, compute_key, feature_key
from explorer.models.loader import load_model


def test_a_key_is_hashed_once_per_model_and_equals_the_plain_hash(
    tiny_model_dir, tiny_dataset, monkeypatch
):
    model = load_model(str(tiny_model_dir))
    sel = Selection.of(tiny_dataset, "test")
    calls = []
    real = keys.compute_key
    monkeypatch.setattr(keys, "compute_key", lambda *a: calls.append(a) or real(*a))
    first = [feature_key(model, tiny_dataset, sel, t, "mid_block", "2", 0) for t in (10, 90)]
    again = [feature_key(model, tiny_dataset, sel, t, "mid_block", "2", 0) for t in (10, 90)]
    assert first == again and len(calls) == 2, (
        f"4 asks of 2 keys must hash twice, hashed {len(calls)}"
    )
    assert first[0] == compute_key(model, tiny_dataset, sel, 10, "mid_block", "2", 0), (
        "the memo returns exactly the key the parts hash to"
    )
    other = load_model(f"random:{tiny_model_dir}")
    assert feature_key(other, tiny_dataset, sel, 10, "mid_block", "2", 0) != first[0], (
        "another model never reuses this model's memo"
    )


def test_a_selection_hashes_its_indices_once(tiny_dataset, monkeypatch):
    sel = Selection.of(tiny_dataset, "train")
    calls = []
    real = keys.content_key
    monkeypatch.setattr(keys, "content_key", lambda parts: calls.append(parts) or real(parts))
    assert sel.fingerprint == sel.fingerprint and len(calls) == 1, "fingerprint hashed once"
    assert Selection.of(tiny_dataset, "test").fingerprint != sel.fingerprint
