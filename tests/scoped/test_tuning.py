"""Process tuning (scoped.tuning): the young generation grows with the
federation, so a fan-out's live objects do not fill it."""

from __future__ import annotations

import gc

from scoped.tuning import GEN0_PER_SITE, GEN0_THRESHOLD, gen0_threshold, tune_gc


def test_the_young_generation_is_sized_to_the_federation() -> None:
    assert gen0_threshold() == GEN0_THRESHOLD
    assert gen0_threshold(3) == GEN0_THRESHOLD  # a small federation: the floor
    assert gen0_threshold(1000) == 1000 * GEN0_PER_SITE > GEN0_THRESHOLD


def test_tune_gc_sets_it_and_freezes_what_start_up_made() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(2000)
        assert gc.get_threshold()[0] == 2000 * GEN0_PER_SITE
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
