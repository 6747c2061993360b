"""The JEPA comparison: attentive vs linear probes, validation-only selection, frozen features, AUROC, and
`patchworld compare` end to end through the CLI."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch
from conftest import TINY_VJEPA_OVERRIDES

from patchworld import WorldModel
from patchworld.evaluation.contestants import PixelFeatures, fit_frames
from patchworld.evaluation.study import FAMILIES, torch_threads
from patchworld.evaluation.cost import train_step_flops
from patchworld.evaluation.features import FeatureSet, extract_features
from patchworld.evaluation.probes import probe_accuracy, probe_inputs, probe_sweep, select_by_validation, train_probe
from patchworld.evaluation.statistics import auroc
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vae import VAE, VAEReconstruction
from patchworld_plugins.vit import ViT
from patchworld_plugins.vjepa import VJEPA


# ---- probes -------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):  # probes are tiny ops; threads only add contention
        yield


def marker_features(n: int, seed: int) -> FeatureSet:
    """The label lives in one token, found only by its marker channel; the mean over tokens carries nothing.

    tokens (n, 8, 6): channel 0 of a random "marker" token (channel 1 = 4) holds +1 / -1 by label, and
    another token holds the opposite sign, so every mean-pooled channel is independent of the label."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    tokens = torch.randn(n, 8, 6, generator=g) * 0.3
    tokens[:, :, 0:2] = 0
    sign = labels.float() * 2 - 1
    where = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(n)])  # (n, 2) marker, anti-marker
    rows = torch.arange(n)
    tokens[rows, where[:, 0], 0], tokens[rows, where[:, 0], 1] = sign, 4.0
    tokens[rows, where[:, 1], 0] = -sign
    return FeatureSet(pooled=tokens.mean(1), labels={"marker": labels}, tokens=tokens)


def test_the_attentive_probe_finds_a_label_that_mean_pooling_cannot():
    train, val, test = marker_features(256, 0), marker_features(128, 1), marker_features(256, 2)
    accuracy = {}
    for kind in ("attentive", "linear"):
        result = probe_sweep(kind, *probe_inputs(kind, train, val, test), ["marker"], lrs=[3e-2],
                             weight_decays=[0.0], steps=150, heads=2)
        accuracy[kind] = result["marker"].test_accuracy
    assert accuracy["attentive"] > 0.95
    assert accuracy["linear"] < 0.65  # mean pooling erased the label: about chance


def test_each_attentive_head_pools_its_own_channel_slice_with_its_own_weights():
    """Head h of task t attends with its query over channel slice h only and returns that slice's pool."""
    from patchworld.evaluation.probes import AttentiveProbe
    probe = AttentiveProbe(8, [2, 2], heads=2)  # 2 tasks x 2 heads of 4 channels
    tokens = torch.zeros(1, 3, 8)
    tokens[0, 2] = torch.tensor([0.0, 1, 2, 3, 0, 5, 6, 7])  # values, zero in both marker channels
    tokens[0, 0, 0], tokens[0, 1, 4] = 1.0, 1.0  # the markers of head 0 (channel 0) and head 1 (channel 4)
    with torch.no_grad():
        probe.queries.zero_()
        probe.queries[0, 0, 0] = probe.queries[1, 1, 0] = 200.0  # task 0 head 0 -> token 0; task 1 head 1 -> token 1
    pooled = probe.pool(tokens)  # (1, 2, 8)
    assert torch.allclose(pooled[0, 0, :4], tokens[0, 0, :4], atol=1e-4)  # head 0 of task 0: token 0's slice
    assert torch.allclose(pooled[0, 0, 4:], tokens[0, :, 4:].mean(0), atol=1e-4)  # zero query: uniform
    assert torch.allclose(pooled[0, 1, 4:], tokens[0, 1, 4:], atol=1e-4)  # head 1 of task 1: token 1's slice
    assert torch.allclose(pooled[0, 1, :4], tokens[0, :, :4].mean(0), atol=1e-4)


def test_the_sweep_selects_by_validation_only():
    """Validation labels agree with training, test labels are flipped: selecting on validation must report
    the point that fits (and so fails on test), not the point that looks best on test."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    y = (x[:, 0] > 0).long()
    train = FeatureSet(pooled=x[:150], labels={"t": y[:150]})
    val = FeatureSet(pooled=x[150:225], labels={"t": y[150:225]})
    test = FeatureSet(pooled=x[225:], labels={"t": 1 - y[225:]})
    result = probe_sweep("linear", *probe_inputs("linear", train, val, test), ["t"], lrs=[1e-7, 0.1],
                         weight_decays=[0.0], steps=100)["t"]
    assert result.lr == 0.1 and result.val_accuracy > 0.9
    assert result.test_accuracy < 0.1
    assert max(point["test"] for point in result.grid) > 0.2  # picking by test would have chosen otherwise
    assert select_by_validation([0.5, 0.9, 0.9, 0.1]) == 1


def test_probe_training_is_deterministic_per_seed_and_tasks_are_independent():
    train = marker_features(64, 0)
    data = probe_inputs("attentive", train)[0]
    data.labels["other"] = (data.x[:, 0, 2] > 0).long()
    one = train_probe("attentive", data, ["marker"], [2], lr=1e-2, weight_decay=0.0, steps=20, seed=3)
    two = train_probe("attentive", data, ["marker", "other"], [2, 2], lr=1e-2, weight_decay=0.0, steps=20, seed=3)
    # training "other" alongside changed nothing for "marker" (up to float summation order)
    assert torch.allclose(one.queries[0], two.queries[0], atol=1e-5)
    assert not torch.allclose(one.queries[0], two.queries[1], atol=1e-3)
    assert probe_accuracy(one, data, ["marker"])["marker"] == probe_accuracy(two, data, ["marker", "other"])["marker"]


# ---- AUROC ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scores, labels, expected", [
    ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfect
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # reversed
    ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # the classic example
    ([0.3, 0.5, 0.5, 0.7], [0, 0, 1, 1], 0.875),  # one positive tied with one negative counts 1/2
])
def test_auroc_on_known_scores(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])


# ---- frozen features and cost ---------------------------------------------------------------------------------
def tiny_vjepa() -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(Pixels(), VJEPA(predictor_dim=16, predictor_depth=1, predictor_heads=2),
                      backbone=ViT(dim=32, depth=1, heads=2, patch_size=(2, 8, 8)))


def test_frozen_features_are_identical_across_two_extractions():
    from patchworld.data.synthetic import SyntheticWorld

    data = SyntheticWorld(frames=4, size=(16, 16), batch_size=4, val_size=8)
    batches = list(data.val_dataloader())
    model = tiny_vjepa().train()  # extraction must switch to eval (no dropout) and restore the mode
    first = extract_features(model, batches, keep_tokens=True)
    second = extract_features(model, batches, keep_tokens=True)
    assert model.training
    assert torch.equal(first.tokens, second.tokens) and torch.equal(first.pooled, second.pooled)
    assert first.tokens.shape == (8, 8, 32) and first.tokens.std() > 0


def test_clip_lengths_and_training_flops():
    vae = WorldModel(VAE(compression=(2, 4, 4), latent_channels=4, width=8, multipliers=[1, 2, 2], blocks=[0, 0, 0]),
                     VAEReconstruction())
    assert fit_frames(vae, 8, 32, 32) == 7  # causal: 1 + 2k
    assert fit_frames(tiny_vjepa(), 8, 32, 32) == 8 and fit_frames(tiny_vjepa(), 7, 32, 32) == 6
    assert fit_frames(PixelFeatures((2, 8, 8)), 5, 32, 32) == 4
    model = tiny_vjepa()
    before = [p.clone() for p in model.parameters()]
    small = train_step_flops(model, {"video": torch.zeros(2, 3, 4, 16, 16)})
    large = train_step_flops(model, {"video": torch.zeros(4, 3, 4, 16, 16)})
    assert small > 0 and large == pytest.approx(2 * small, rel=0.05)  # FLOPs scale with the batch
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # counting does not train


def test_flop_counter_counts_the_cpu_attention_kernel():
    """SDPA's fused CPU kernel is counted (torch 2.14's own counter counts 0 for it): forward 4 b h n m d,
    backward twice that, the same as the math backend's matmuls."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from patchworld.evaluation.cost import flop_counter

    q = torch.randn(2, 3, 40, 16, requires_grad=True)
    k, v = torch.randn(2, 3, 24, 16, requires_grad=True), torch.randn(2, 3, 24, 16, requires_grad=True)
    forward = 4 * 2 * 3 * 40 * 24 * 16
    totals = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        with flop_counter() as counter, sdpa_kernel(backend):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            assert counter.get_total_flops() == forward
            out.sum().backward()
        totals.append(counter.get_total_flops())
    assert totals == [3 * forward, 3 * forward]


# ---- the command ------------------------------------------------------------------------------------------------
TINY = """
name: test
output: out
budget_flops: 3.0e7
data: {frames: 4, size: [16, 16], batch_size: 4, probe_train: 32, probe_val: 16, probe_test: 16, max_objects: 2}
physics: {violations: [permanence, solidity], sets: 3, frames: 8, size: [24, 24], context: 4, resamples: 200}
probe: {lrs: [1.0e-2], weight_decays: [1.0e-4, 1.0e-2], steps: 10, seeds: 2, fractions: [0.5, 1.0]}
ceiling: null   # 16 test clips make every task's ceiling indistinguishable from chance (tests/test_ceiling.py)
models:
  - name: vjepa
    recipe: vjepa-tiny
    overrides: """ + TINY_VJEPA_OVERRIDES + """
baselines:
  - {name: pixels, kind: pixels, patch_size: [2, 8, 8]}
  - name: random-vit
    kind: random_init
    recipe: videomae-tiny
    overrides: [--model.backbone.init_args.dim, "32", --model.backbone.init_args.depth, "1",
                --model.backbone.init_args.heads, "2", --model.objective.init_args.predictor_dim, "16",
                --model.objective.init_args.predictor_depth, "1"]
"""


def test_compare_end_to_end_through_the_cli(run_cli, tmp_path):
    (tmp_path / "study.yaml").write_text(TINY)
    assert run_cli("compare", "--config", "study.yaml", "--progress", "false") == 0
    out = tmp_path / "out"
    for name in ("report.md", "results.json", "compare-families.png", "compare-fractions.png",
                 "physics-curves.png", "physics-accuracy.png", "compare-cost.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["vjepa", "vjepa-random", "pixels", "random-vit"]  # the control follows its model
    tasks = [t for family in FAMILIES.values() for t in family]
    for name, entry in results["models"].items():
        for kind in ("attentive", "linear"):
            for fraction in ("0.5", "1.0"):
                for task in tasks:
                    cell = entry["probes"][kind][fraction][task]
                    assert 0 <= cell["mean"] <= 1 and cell["std"] >= 0 and len(cell["values"]) == 2
                    assert cell["ci"]["low"] <= cell["mean"] <= cell["ci"]["high"]
            assert set(entry["families"][kind]["1.0"]) == set(FAMILIES)
        assert {"parameters", "flops_per_step", "steps", "train_flops", "wall_time_s", "peak_memory_mb"} <= set(entry["cost"])
    vjepa = results["models"]["vjepa"]
    assert vjepa["cost"]["steps"] == int(3.0e7 // vjepa["cost"]["flops_per_step"]) >= 1
    assert vjepa["cost"]["train_flops"] <= 3.0e7 and vjepa["cost"]["wall_time_s"] > 0
    # the same layer search for the trained model and its control: every depth of the 1-block encoder
    for name in ("vjepa", "vjepa-random", "random-vit"):
        assert [g["depth"] for g in results["models"][name]["feature_search"]["grid"]] == [1]
    assert results["models"]["pixels"]["feature_search"] is None
    assert (out / "features" / "vjepa" / "chosen" / "test.safetensors").exists()
    physics = results["physics"]
    assert set(physics["models"]) == {"vjepa", "vjepa-random", "pixels", "random-vit"}
    for entry in physics["models"].values():
        assert set(entry["scores"]) == {"permanence", "solidity", "overall"}
        for how in ("max", "mean"):
            cell = entry["scores"]["overall"][how]["relative_accuracy"]
            assert 0 <= cell["low"] <= cell["value"] <= cell["high"] <= 1
    assert {(d["a"], d["b"]) for d in physics["differences"]} >= {("vjepa", "vjepa-random")}
    assert all(d["label"] in ("resolved", "within noise") for d in physics["differences"])
    pairs = {(d["a"], d["b"]) for d in results["differences"]["attentive"]["motion"]}
    assert ("vjepa", "vjepa-random") in pairs
    assert results["models"]["random-vit"]["cost"]["train_flops"] == 0
    report = (out / "report.md").read_text()
    assert "| vjepa |" in report and "| vjepa-random |" in report and "relative accuracy" in report
    assert "resolved" in report or "within noise" in report


def test_probing_precomputed_features(run_cli, tmp_path):
    """A model given as a folder of features (here: saved by an earlier study) is probed like any other."""
    from patchworld.evaluation.features import FeatureSet, save_features

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        labels = torch.randint(0, 2, (n,), generator=g)
        tokens = torch.randn(n, 4, 8, generator=g) + labels[:, None, None] * 2.0  # the label is in every token
        save_features(FeatureSet(tokens.mean(1), {"marker": labels}, tokens, torch.zeros(n, 4, 3, dtype=torch.long)),
                      tmp_path / "feats" / f"{split}.safetensors")
    (tmp_path / "study.yaml").write_text(textwrap.dedent(f"""
        output: out
        tasks: {{toy: [marker]}}
        probe: {{lrs: [1.0e-2], weight_decays: [1.0e-4], steps: 60, seeds: 1, fractions: [1.0]}}
        models: [{{name: mine, features: {tmp_path / 'feats'}}}]
    """))
    assert run_cli("compare", "--config", "study.yaml", "--progress", "false") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["models"]["mine"]["probes"]["linear"]["1.0"]["marker"]["mean"] > 0.9
    assert results["physics"] is None


def test_the_shipped_study_parses_and_gives_every_trained_model_its_control():
    from patchworld.evaluation.compare import make_study, parse_study

    init, config = parse_study(["--config", "compare-tiny"])
    study = make_study(init)
    roles = [(role, spec.name) for role, spec in study.entries()]
    assert ("model", "vjepa") in roles and ("control", "vjepa-random") in roles
    assert ("control", "vjepa-motion-random") not in roles  # control: false (the same network as vjepa-random)
    assert study.physics_spec.sets == config["physics"]["sets"] and study.physics_spec.context == 4


def test_compare_names_the_bad_key(run_cli, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(textwrap.dedent("""
        output: out
        tasks: {appearance: [shape, flavour]}
        baselines: [{name: pixels, kind: pixels}]
    """))
    assert run_cli("compare", "--config", "bad.yaml") == 2
    assert "flavour" in capsys.readouterr().err


def labelled_folder(root, per_class: int = 5):
    """Two classes of tiny mp4s: a red square moving right, a blue square moving left."""
    from patchworld.data.video_io import write_video

    for label, colour, step in (("red_right", (1.0, -1.0, -1.0), 2), ("blue_left", (-1.0, -1.0, 1.0), -2)):
        for k in range(per_class):
            video = torch.full((3, 8, 16, 16), -0.8)
            for t in range(8):
                x = 6 + step * (t - 4) // 2 + (k % 3) - 1
                video[:, t, 5 + k % 4 : 10 + k % 4, x : x + 4] = torch.tensor(colour).view(3, 1, 1)
            write_video(root / label / f"{k}.mp4", video, fps=8)
    return root


def test_compare_on_a_labelled_video_folder(run_cli, tmp_path):
    labelled_folder(tmp_path / "videos")
    (tmp_path / "study.yaml").write_text(textwrap.dedent(f"""
        output: out
        data: {{folder: {tmp_path / 'videos'}, frames: 4, size: [16, 16], folder_val_fraction: 0.5}}
        probe: {{lrs: [1.0e-2], weight_decays: [1.0e-4], steps: 20, seeds: 1, fractions: [1.0]}}
        ceiling: null   # 2-3 test clips: no ceiling can clear chance with an interval
        baselines: [{{name: pixels, kind: pixels, patch_size: [2, 8, 8]}}]
    """))
    assert run_cli("compare", "--config", "study.yaml", "--progress", "false") == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["families"] == {"label": ["label"]} and results["physics"] is None
    pixels = results["models"]["pixels"]
    assert 0 <= pixels["probes"]["linear"]["1.0"]["label"]["mean"] <= 1


def test_folder_probe_splits_are_disjoint_and_too_few_files_is_an_error(tmp_path):
    from patchworld import DataError
    from patchworld.evaluation.study import DataSpec, ProbeSpec, Study

    study = Study([], [], DataSpec(folder=str(labelled_folder(tmp_path / "videos")), frames=4, size=(16, 16),
                                   folder_val_fraction=0.5), ProbeSpec(), None, tmp_path / "out")
    splits = {name: torch.cat([b["video"] for b in study.probe_clips(name)]) for name in ("train", "val", "test")}
    assert all(len(clips) for clips in splits.values())
    assert not any(torch.equal(v, t) for v in splits["val"] for t in splits["test"])  # never the same clip
    small = labelled_folder(tmp_path / "small", per_class=1)
    study = Study([], [], DataSpec(folder=str(small), frames=4, size=(16, 16)), ProbeSpec(), None, tmp_path / "o2")
    with pytest.raises(DataError, match="too few to hold out separate validation and test files"):
        study.probe_clips("train")


# ---- resuming, failures, the wall-time split ---------------------------------------------------------------------
#: the tiny study with one probe seed at one label fraction and no random-init baseline, to run it several times
SHORT = (TINY.replace("seeds: 2, fractions: [0.5, 1.0]", "seeds: 1, fractions: [1.0]")
         .split("  - name: random-vit")[0])


def numbers(results: dict):
    """A study's results without what differs between two runs of the same work: times, memory, paths."""
    if isinstance(results, dict):
        return {k: numbers(v) for k, v in results.items()
                if k not in ("config", "wall_time", "wall_time_s", "eval_time_s", "peak_memory_mb", "checkpoint")}
    return [numbers(v) for v in results] if isinstance(results, list) else results


@pytest.fixture
def work(monkeypatch):
    """Counts what a study computes: models fitted, feature sets extracted (per model name) and physics scored."""
    import pytorch_lightning as pl

    from patchworld.evaluation import study

    done = {"fit": 0, "extract": 0, "physics": []}
    fit, extract, physics = pl.Trainer.fit, study.extract_features, study.PhysicsRun.add

    def counting_fit(*args, **kwargs):
        done["fit"] += 1
        return fit(*args, **kwargs)

    def counting_extract(*args, **kwargs):
        done["extract"] += 1
        return extract(*args, **kwargs)

    def counting_physics(self, name, *args, **kwargs):
        done["physics"].append(name)
        return physics(self, name, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", counting_fit)
    monkeypatch.setattr(study, "extract_features", counting_extract)
    monkeypatch.setattr(study.PhysicsRun, "add", counting_physics)

    def reset():
        done.update(fit=0, extract=0, physics=[])
        return done

    return reset


def test_compare_resumes_what_an_earlier_run_did_and_gives_the_same_numbers(run_cli, tmp_path, work, monkeypatch):
    from patchworld.evaluation.study import Study

    (tmp_path / "study.yaml").write_text(SHORT)
    study = ("compare", "--config", "study.yaml", "--progress", "false")
    assert run_cli(*study, "--output", "a") == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    checkpoint = tmp_path / "a" / "models" / "vjepa" / "last.ckpt"
    written = checkpoint.stat().st_mtime_ns

    done = work()  # the same study again: nothing trained, extracted or scored, the same numbers
    assert run_cli(*study, "--output", "a") == 0
    again = json.loads((tmp_path / "a" / "results.json").read_text())
    assert done == {"fit": 0, "extract": 0, "physics": []} and checkpoint.stat().st_mtime_ns == written
    assert numbers(again) == numbers(first)
    parts = again["wall_time"]["parts"]
    assert parts["training"] == {"seconds": 0.0, "share": 0.0, "reused": ["vjepa"]}
    assert parts["features"]["seconds"] == 0.0 and parts["physics"]["reused"] == list(first["models"])
    assert "| training | 0.0 | 0% | vjepa |" in (tmp_path / "a" / "report.md").read_text()
    # `patchworld physics` on the study reuses the same models and surprise curves
    assert run_cli("physics", "--config", "study.yaml", "--output", "a", "--progress", "false") == 0
    assert done == {"fit": 0, "extract": 0, "physics": []}
    assert json.loads((tmp_path / "a" / "physics.json").read_text())["models"] == first["physics"]["models"]

    # a run interrupted after its first model, then resumed, gives what the uninterrupted one gave
    score = Study.saved_physics

    def interrupted(self, role, spec, *args):
        if spec.name == "vjepa-random":
            raise KeyboardInterrupt
        return score(self, role, spec, *args)

    monkeypatch.setattr(Study, "saved_physics", interrupted)
    assert run_cli(*study, "--output", "b") == 130 and not (tmp_path / "b" / "results.json").exists()
    monkeypatch.setattr(Study, "saved_physics", score)
    done = work()
    assert run_cli(*study, "--output", "b") == 0
    assert done["fit"] == 0 and done["physics"] == ["vjepa-random", "pixels"]
    assert numbers(json.loads((tmp_path / "b" / "results.json").read_text())) == numbers(first)

    # a changed budget retrains the trained model only: its control and the baselines keep their features
    done = work()
    assert run_cli(*study, "--output", "a", "--budget_flops", "6.0e7") == 0
    assert done["fit"] == 1 and checkpoint.stat().st_mtime_ns != written and done["physics"] == ["vjepa"]
    changed = json.loads((tmp_path / "a" / "results.json").read_text())
    assert changed["models"]["vjepa"]["cost"]["steps"] > first["models"]["vjepa"]["cost"]["steps"]
    assert changed["wall_time"]["parts"]["features"]["reused"] == ["vjepa-random", "pixels"]

    done = work()  # --fresh recomputes everything
    assert run_cli(*study, "--output", "a", "--budget_flops", "6.0e7", "--fresh", "true") == 0
    assert done["fit"] == 1 and len(done["physics"]) == 3
    assert numbers(json.loads((tmp_path / "a" / "results.json").read_text())) == numbers(changed)
    split = changed["wall_time"]
    assert sum(p["seconds"] for p in split["parts"].values()) == pytest.approx(split["total_s"])
    assert all(p["seconds"] >= 0 for p in split["parts"].values()) and split["parts"]["training"]["seconds"] > 0


def test_a_model_that_fails_is_named_in_one_line_and_the_others_are_kept(run_cli, tmp_path, capsys, monkeypatch):
    broken = ('  - name: broken\n    recipe: vjepa-tiny\n    overrides: [--model.optimizer.init_args.lr, "-1.0", '
              '--model.backbone.init_args.dim, "32", --model.backbone.init_args.depth, "1", '
              '--model.backbone.init_args.heads, "2"]\nbaselines:')
    (tmp_path / "study.yaml").write_text(SHORT.replace("baselines:", broken))
    assert run_cli("compare", "--config", "study.yaml", "--progress", "false") == 3  # outputs written, a model lost
    err = capsys.readouterr().err.strip().splitlines()
    line = "broken failed: ValueError: Invalid learning rate: -1.0 (run again with --debug for the traceback)"
    assert f"patchworld: compare: {line}" in err
    assert err[-1] == "patchworld: error: compare: 1 of 5 models failed (broken); the others' results are in out/report.md"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["models"]["broken"] == {"role": "model", "failed": line}
    assert {"vjepa", "vjepa-random", "broken-random", "pixels"} == {
        name for name, entry in results["models"].items() if "probes" in entry}  # its control too
    assert "broken" not in results["physics"]["models"] and "broken-random" in results["physics"]["models"]
    pairs = {(d["a"], d["b"]) for rows in results["differences"]["linear"].values() for d in rows}
    assert ("vjepa", "vjepa-random") in pairs and not any("broken" in (a, b) for a, b in pairs)
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"* {line}" in report and "| broken |" not in report and "| broken-random |" in report

    monkeypatch.setenv("PATCHWORLD_DEBUG", "1")  # --debug: the traceback, from the failing model itself
    with pytest.raises(ValueError, match="Invalid learning rate"):
        run_cli("compare", "--config", "study.yaml", "--progress", "false")
