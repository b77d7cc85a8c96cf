"""The generation inside evaluate-* and sample-* as generation units (lumos/runtime/units.py):
seeds fixed per unit whoever runs it, results merged in unit order, finished units skipped
before any model is built. On a real local Ray: tests/test_ray_stages.py (evaluate-i2v)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lumos.runtime.units import UnitWorker, checkpoint_id, run_units, stamp


def test_clip_waves_give_each_decodable_clip_its_rank_as_seed():
    from lumos.eval.i2v_heldout import collect_clips

    calls = []

    def score(batch):  # rows "b*" cannot be decoded
        calls.append([(row, seed) for row, seed in batch])
        return [{"skipped": row} if row.startswith("b") else {"key": row, "seed": seed} for row, seed in batch]

    got, skipped = collect_clips(["ok0", "bad1", "ok2", "bad3", "ok4", "ok5"], 3, 10, score)
    assert [(g["key"], g["seed"]) for g in got] == [("ok0", 10), ("ok2", 11), ("ok4", 12)]
    assert skipped == ["bad1", "bad3"]
    # wave 1 sends 3 clips; after bad1, ok2 goes out again with seed 11 (was 12)
    assert calls[0] == [("ok0", 10), ("bad1", 11), ("ok2", 12)] and calls[1] == [("ok2", 11), ("bad3", 12)]
    assert collect_clips(["bad0"], 2, 0, score) == ([], ["bad0"])


class _Recorder(UnitWorker):
    built: list = []

    def generate(self, unit, models: dict) -> dict:
        return {"x": torch.full((2,), float(unit.seed)), "seed": unit.seed}


def _build() -> dict:
    _Recorder.built.append(1)
    return {}


@dataclass(frozen=True)
class Unit:
    """The smallest generation unit: what run_units reads of one."""

    index: int
    seed: int
    stamp: str
    target: str | None


def test_units_merge_in_order_and_a_filed_unit_is_not_generated_again(tmp_path):
    units = [Unit(i, 100 + i, stamp("s", i), str(tmp_path / f"{i}.safetensors")) for i in (2, 0, 1)]
    first = run_units(_Recorder, (_build,), units, None)
    assert [r["seed"] for r in first] == [102, 100, 101] and len(_Recorder.built) == 1
    assert torch.equal(first[0]["x"], torch.full((2,), 102.0))
    again = run_units(_Recorder, (_build, "cpu", {"other": "fp32"}), units, None)  # a new worker: all filed
    assert [r["seed"] for r in again] == [102, 100, 101] and len(_Recorder.built) == 1  # no model built
    stale = [Unit(0, 7, stamp("other"), units[1].target)]
    assert run_units(_Recorder, (_build,), stale, None)[0]["seed"] == 7 and len(_Recorder.built) == 2
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"1")
    before = checkpoint_id(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"22")  # retrained at the same path
    assert checkpoint_id(ckpt) != before and checkpoint_id(tmp_path / "absent")["files"] == {}
    with pytest.raises(ValueError, match="device"):
        _Recorder(_build, "tpu")


def test_reporting_units_hears_every_unit_of_every_call_inside_and_none_outside(tmp_path):
    from lumos.runtime.units import reporting_units

    heard, own = [], []
    units = [Unit(i, i, stamp("progress", i), None) for i in range(3)]
    with reporting_units(lambda done, total, result: heard.append((done, total, result[1]["seed"]))):
        run_units(_Recorder, (_build,), units, None)
        run_units(_Recorder, (_build,), units[:1], None, on_done=lambda *a: own.append(a[:2]))  # its own wins
    run_units(_Recorder, (_build,), units, None)  # outside: nobody is told
    assert [(d, t) for d, t, _ in heard] == [(1, 3), (2, 3), (3, 3)]
    assert sorted(s for *_, s in heard) == [0, 1, 2] and own == [(1, 1)]
