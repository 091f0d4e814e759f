"""Parameters: one declaration, the shipped YAML, and what the offline tools read."""

from __future__ import annotations

import pytest

from conftest import REPO
from seg_perception import params


def test_shipped_yaml_sets_every_parameter_to_its_declared_default():
    import yaml

    raw = yaml.safe_load((REPO / "config" / "seg_perception.yaml").read_text())
    assert set(raw["/**"]["ros__parameters"]) == set(params.PARAMETERS_BY_NAME)
    assert params.load_params_yaml(REPO / "config" / "seg_perception.yaml") == params.defaults()


def test_every_parameter_has_a_description_and_numeric_ones_a_range():
    for spec in params.PARAMETERS:
        assert spec.description.endswith("."), spec.name
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert spec.min is not None and spec.max is not None, spec.name
            assert spec.min <= spec.default <= spec.max, spec.name


@pytest.mark.parametrize("name, value, words", [
    ("score_threshold", 1.5, "above the maximum"),
    ("top_k", 0, "below the minimum"),
    ("top_k", 2.5, "must be int"),
    ("mask_encoding", "png", "not one of"),
    ("autostart", "yes", "must be bool"),
    ("no_such_parameter", 1, "unknown parameter"),
])
def test_bad_values_are_refused_with_the_reason(name, value, words):
    with pytest.raises(ValueError, match=words):
        params.validate({name: value})


def test_an_int_is_accepted_for_a_float_parameter():
    assert params.validate({"score_threshold": 1})["score_threshold"] == 1.0


def test_node_specific_sections_override_the_wildcard(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    top_k: 50\n    score_threshold: 0.4\n"
                 "/robot/seg_perception_node:\n  ros__parameters:\n    top_k: 70\n"
                 "other_node:\n  ros__parameters:\n    top_k: 9\n")
    values = params.load_params_yaml(f)
    assert values["top_k"] == 70 and values["score_threshold"] == 0.4


def test_a_broken_params_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("/**:\n  ros__parameters:\n    top_k: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        params.load_params_yaml(f)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        params.load_params_yaml(tmp_path / "missing.yaml")


def test_readme_parameter_table_is_the_generated_one():
    assert params.markdown_table() in (REPO / "docs" / "parameters.md").read_text(), \
        "docs/parameters.md parameter table is stale: paste seg_perception.params.markdown_table() into it"


def test_parameters_rclpy_owns_are_accepted_in_a_params_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("/**:\n  ros__parameters:\n    use_sim_time: true\n    top_k: 50\n")
    assert params.load_params_yaml(f)["top_k"] == 50
