"""Floors and ceilings: the supervised ceiling reads what the labels allow, gap closed puts a model between its
random-init control and that ceiling, and a study refuses a task nobody can learn at its data settings."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import TINY_VJEPA_OVERRIDES

from patchworld.evaluation.ceiling import CeilingSpec, supervised_ceiling
from patchworld.evaluation.statistics import gap_closed


def batches(n: int, seed: int) -> list[dict]:
    """Noise clips (3, 4, 16, 16) whose label "bright" says whether the red channel is raised (a pixel
    statistic) and whose label "coin" is a coin flip nothing in the clip tells."""
    g = torch.Generator().manual_seed(seed)
    bright = torch.randint(0, 2, (n,), generator=g)
    video = torch.rand(n, 3, 4, 16, 16, generator=g) * 2 - 1
    video[:, 0] = (video[:, 0] + 0.4 * (2 * bright[:, None, None, None] - 1)).clamp(-1, 1)
    coin = torch.randint(0, 2, (n,), generator=g)
    return [{"video": video[i : i + 32], "labels": {"bright": bright[i : i + 32], "coin": coin[i : i + 32]}}
            for i in range(0, n, 32)]


def test_the_ceiling_reads_a_pixel_statistic_and_stays_at_chance_on_random_labels():
    spec = CeilingSpec(steps=120, width=8, batch_size=32, eval_every=20)
    result = supervised_ceiling(batches(128, 0), batches(64, 1), batches(128, 2), ["bright", "coin"], spec)
    assert result["bright"].test_accuracy > 0.9 and result["bright"].learnable
    assert abs(result["coin"].test_accuracy - 0.5) < 0.15 and not result["coin"].learnable
    assert result["bright"].test_correct.shape == (128,) and result["bright"].step % 20 == 0
    again = supervised_ceiling(batches(128, 0), batches(64, 1), batches(128, 2), ["bright", "coin"], spec)
    assert torch.equal(again["coin"].test_correct, result["coin"].test_correct)  # seeded: the same verdicts


def test_gap_closed_is_0_at_the_floor_1_at_the_ceiling_and_undefined_without_room():
    g = torch.Generator().manual_seed(0)
    floor = torch.rand(200, generator=g) < 0.3
    ceiling = torch.rand(200, generator=g) < 0.9
    halfway = torch.where(torch.arange(200) % 2 == 0, floor, ceiling)
    assert gap_closed(floor, floor, ceiling).value == 0.0
    assert gap_closed(ceiling, floor, ceiling).value == 1.0
    between = gap_closed(halfway, floor, ceiling)
    assert 0.2 < between.value < 0.8 and between.low < between.value < between.high
    assert gap_closed(ceiling, ceiling, floor) is None  # the "ceiling" below the floor: no scale
    with pytest.raises(ValueError, match="same test clips"):
        gap_closed(floor[:100], floor, ceiling)


STUDY = """
output: out
data: {{frames: 4, size: [16, 16], batch_size: 4, probe_train: 96, probe_val: 48, probe_test: 64, max_objects: 1,
        object_scale: 2.0, reverse_prob: 0.0}}
tasks: {{appearance: [colour], motion: [reversed]}}
ceiling: {{steps: 150, width: 8, batch_size: 32, eval_every: 25}}
probe: {{lrs: [1.0e-2], weight_decays: [1.0e-4], steps: 20, seeds: 1, fractions: [1.0]}}
budget_flops: 3.0e7
models:
  - name: vjepa
    recipe: vjepa-tiny
    overrides: {overrides}
    search: {{depth: [1]}}
baselines: [{{name: pixels, kind: pixels, patch_size: [2, 8, 8]}}]
physics: {{violations: [permanence], sets: 2, frames: 8, size: [24, 24], context: 4, resamples: 100}}
{extra}
"""


def study_yaml(extra: str) -> str:
    return textwrap.dedent(STUDY.format(extra=extra, overrides=TINY_VJEPA_OVERRIDES))


def test_a_study_refuses_a_task_no_one_can_learn_unless_told_to_keep_it(run_cli, tmp_path, capsys):
    # no clip is played backwards: `reversed` is always "forward", so nothing can beat chance (1.0) on it
    (tmp_path / "study.yaml").write_text(study_yaml(""))
    assert run_cli("compare", "--config", "study.yaml", "--progress", "false") == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "reversed" in error and "keep_unlearnable" in error and "colour" not in error
    assert not (tmp_path / "out" / "report.md").exists()

    (tmp_path / "kept.yaml").write_text(study_yaml("keep_unlearnable: [reversed]"))
    assert run_cli("compare", "--config", "kept.yaml", "--progress", "false") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["families"] == {"appearance": ["colour"]}  # reversed is in no family average
    assert results["ceilings"]["colour"]["learnable"] and not results["ceilings"]["reversed"]["learnable"]
    assert results["ceilings"]["colour"]["ci"]["low"] > results["ceilings"]["colour"]["chance"] + 0.2  # clearly
    assert {c["step"] for c in results["ceilings"].values()} <= set(range(25, 151, 25))  # its steps, every 25
    assert "reversed" in results["models"]["pixels"]["probes"]["linear"]["1.0"]  # but still probed and reported
    # vjepa's gap closed: its accuracy placed between its random-init control (0) and the ceiling (1)
    model, floor = (results["models"][n]["probes"]["linear"]["1.0"]["colour"]["mean"] for n in ("vjepa", "vjepa-random"))
    ceiling = results["ceilings"]["colour"]["mean"]
    gap = results["gap_closed"]["vjepa"]["linear"]
    assert list(results["gap_closed"]) == ["vjepa"] and set(gap) == {"appearance", "colour", "reversed"}
    assert gap["reversed"] is None  # ceiling and floor both read the one class: no room to close
    assert gap["colour"]["value"] == pytest.approx((model - floor) / (ceiling - floor))
    assert gap["colour"]["low"] <= gap["colour"]["value"] <= gap["colour"]["high"]
    assert (tmp_path / "out" / "compare-gap.png").stat().st_size > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Floors and ceilings" in report and "Not learnable here (kept on request): reversed" in report
    gap_rows = [line for line in report.split("## Floors and ceilings")[1].splitlines() if line.startswith("| colour |")]
    assert gap_rows and all(line.endswith(("resolved |", "within noise |")) for line in gap_rows)  # each gap labelled


def test_a_study_reuses_ceilings_measured_on_the_same_data_tasks_and_settings(tmp_path, monkeypatch):
    from patchworld.evaluation import study
    from patchworld.evaluation.contestants import Baseline

    data = study.DataSpec(frames=4, size=(16, 16), probe_train=64, probe_val=32, probe_test=32, max_objects=1,
                          object_scale=2.0)
    settings = CeilingSpec(steps=40, width=8, batch_size=32, eval_every=20)

    def measured(ceiling=settings, fresh=False) -> tuple[bool, dict]:
        one = study.Study([], [Baseline("pixels")], data, study.ProbeSpec(), None, tmp_path, {"appearance": ["colour"]},
                          ceiling=ceiling, keep_unlearnable=["colour"], fresh=fresh)
        return one.measure_ceilings(), one.ceilings["colour"]

    def same(a, b) -> bool:
        return (a.step, a.val_accuracy, a.test_accuracy, a.chance) == (b.step, b.val_accuracy, b.test_accuracy, b.chance) \
            and torch.equal(a.test_correct, b.test_correct)

    reused, first = measured()
    assert not reused and (tmp_path / "ceilings.json").exists()
    calls = []
    measure = study.supervised_ceiling
    monkeypatch.setattr(study, "supervised_ceiling", lambda *args, **kwargs: calls.append(1) or measure(*args, **kwargs))
    reused, again = measured()
    assert reused and not calls and same(again, first)
    reused, _ = measured(CeilingSpec(steps=20, width=8, batch_size=32, eval_every=20))  # other settings: measured
    assert not reused and calls == [1]
    reused, fresh = measured(fresh=True)
    assert not reused and calls == [1, 1] and same(fresh, first)
