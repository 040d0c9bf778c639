"""The exercises' check_... helpers in going_modular.course: right answers pass, wrong ones do not, and
the truth they judge against is the real thing (the built models, the real folders, batch_ray's sizing)."""
import json

import pytest

from going_modular import course
from going_modular.deploy.batch.ray_engine import pool_size
from going_modular.model_builder import REGISTRY, create_model
from going_modular.utils import count_parameters


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_trainable_parameters_match_the_built_model(name, capsys):
    for classes in (3, 101):
        model, _ = create_model(name, num_classes=classes, weights=None)
        truth = count_parameters(model)["trainable"]
        assert course.check_trainable_parameters(name, classes, truth)
        assert not course.check_trainable_parameters(name, classes, truth - classes)  # the biases forgotten
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["right", "not yet"] * 2


def test_placeholder_and_unknown_model(capsys):
    assert not course.check_trainable_parameters("effnet_lite0", 3, ...)
    assert capsys.readouterr().out == "not yet: replace ... with your answer\n"
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        course.check_trainable_parameters("resnet50", 3, 1)


def test_class_counts_are_counted_from_the_folders(pss_dir, capsys):
    train = pss_dir / "train"
    assert course.check_class_counts(train, {"pizza": 154, "steak": 146, "sushi": 150})  # the mirror's README
    assert not course.check_class_counts(train, {"pizza": 154, "steak": 150, "sushi": 146})
    assert not course.check_class_counts(train, {"pizza": 154, "steak": 146})
    assert capsys.readouterr().out.splitlines()[1] == "not yet: these classes are off: steak, sushi"


def test_meets_goal_edges(capsys):
    assert course.check_meets_goal(lambda acc, s: acc >= 0.95 and s <= 0.03)
    assert not course.check_meets_goal(lambda acc, s: acc > 0.95 and s < 0.03)  # the limits are inclusive
    assert not course.check_meets_goal(lambda acc, s: acc >= 0.95)  # speed forgotten
    assert not course.check_meets_goal(lambda acc, s: None)  # the exercise's empty starter
    assert "fn(0.95, 0.03) should be True" in capsys.readouterr().out


def test_committed_full_run_stats_are_labelled_and_complete():
    book = json.loads(course.FULL_RUN_STATS.read_text())
    assert "full (not fast) run" in book["about"] and book["machine"]
    columns = {"test_acc", "number_of_parameters", "model_size_mb", "time_per_pred_cpu", "pretrained"}
    assert {"effnet_lite0", "effnet_lite0_onnx_int8", "effnetb2", "vit_b_16"} <= set(book["models"])
    assert all(columns <= set(row) for row in book["models"].values())


def test_pick_follows_the_rule_on_the_committed_stats():
    stats = course.load_full_run_stats()
    pick = course.pick_model(stats)
    assert pick is not None and course.meets_goal(stats[pick])
    assert all(stats[pick]["test_acc"] >= row["test_acc"] for row in stats.values() if course.meets_goal(row))
    assert course.check_pick(pick)
    assert not course.check_pick(next(name for name in stats if name != pick))
    assert course.check_pick(None, accuracy_goal=1.01)  # nothing is more than 100% accurate


def test_pick_prefers_accuracy_then_speed_and_never_untrained():
    rows = {"a": {"pretrained": True, "test_acc": 0.96, "time_per_pred_cpu": 0.01},
            "b": {"pretrained": True, "test_acc": 0.97, "time_per_pred_cpu": 0.02},
            "c": {"pretrained": True, "test_acc": 0.97, "time_per_pred_cpu": 0.015},
            "d": {"pretrained": False, "test_acc": 0.99, "time_per_pred_cpu": 0.001},
            "e": {"pretrained": True, "test_acc": 0.99, "time_per_pred_cpu": 0.031}}
    assert course.pick_model(rows) == "c"
    assert course.check_pick("a", accuracy_goal=0.9, seconds_goal=0.012, stats=rows)
    assert not course.check_pick("d", accuracy_goal=0.9, seconds_goal=0.012, stats=rows)


def test_not_sure_below_the_threshold(capsys):
    def right(probs):
        label = max(probs, key=probs.get)
        return label if probs[label] >= 0.5 else "not sure"

    assert course.check_not_sure(right)
    assert not course.check_not_sure(lambda p: max(p, key=p.get))  # never unsure
    assert not course.check_not_sure(lambda p: max(p, key=p.get) if max(p.values()) > 0.5 else "not sure")
    assert "should be 'sushi'" in capsys.readouterr().out  # exactly 50% answers
    assert not course.check_not_sure(right, threshold=0.6)  # the function hard-codes 50%


def test_cluster_cpus_use_batch_ray_sizing(capsys):
    assert course.check_cluster_cpus(20, 10_000_000, 3600, 155)  # the README's 10 million photos an hour
    assert not course.check_cluster_cpus(18, 10_000_000, 3600, 155)  # the actor CPUs alone
    assert course.check_cluster_cpus(13, 1_000_000, 600, 155)  # exercise 1 of notebook 09
    actors, each = pool_size(13, None)
    assert actors * each * 155 >= 1_000_000 / 600 > pool_size(12, None)[0] * 155
    assert "18 actor CPUs" in capsys.readouterr().out


def test_publish_writes_what_load_reads(tmp_path, monkeypatch):
    """publish_full_run_stats labels a full run's models/*_stats.json; fast mode and an empty run are refused."""
    monkeypatch.setattr(course, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(course, "FAST", False)  # make test runs with FOODVISION_FAST=1
    with pytest.raises(RuntimeError, match="run notebooks 02-05 in full mode first"):
        course.publish_full_run_stats("test machine", tmp_path / "stats.json")
    row = {"test_acc": 0.97, "time_per_pred_cpu": 0.02, "pretrained": True}
    course.save_stats("effnet_lite0", row)
    path = course.publish_full_run_stats("test machine", tmp_path / "stats.json")
    assert course.load_full_run_stats(path) == {"effnet_lite0": row}
    assert json.loads(path.read_text())["machine"] == "test machine"
    monkeypatch.setattr(course, "FAST", True)
    with pytest.raises(RuntimeError, match="fast mode"):
        course.publish_full_run_stats("test machine", tmp_path / "stats.json")
