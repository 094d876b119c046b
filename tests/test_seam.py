"""The ultralytics seam: each upstream method a hook mirrors is pinned, and a change to one names the hook."""

from __future__ import annotations

import inspect

from wildfire_kd import seam


def test_every_pinned_upstream_method_is_the_one_the_hooks_were_written_against():
    changed = seam.changed_upstream()
    assert changed == [], "\n".join(changed)


def test_a_changed_upstream_method_fails_the_pin_naming_the_method_and_the_hook(monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    real_getsource = inspect.getsource

    def getsource(obj):
        source = real_getsource(obj)
        return source + "\n# a new release\n" if obj is BaseTrainer.save_model else source

    monkeypatch.setattr(inspect, "getsource", getsource)
    changed = seam.changed_upstream()
    assert len(changed) == 1
    assert changed[0].startswith("ultralytics.engine.trainer.BaseTrainer.save_model changed in ultralytics 8.")
    assert "re-check SeamTrainer.save_model" in changed[0]


def test_a_pinned_method_that_is_gone_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(seam.UPSTREAM, "ultralytics.utils.loss.v8DetectionLoss.no_such_method", ("0" * 16, "a hook"))
    changed = seam.changed_upstream()
    assert [c.split(" changed")[0] for c in changed] == ["ultralytics.utils.loss.v8DetectionLoss.no_such_method"]
    assert "gone (AttributeError)" in changed[0]
