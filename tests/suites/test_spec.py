"""Suite files: parsing, overrides and every validation error naming file, field and choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from suites.protocols.dynamics.protocol import DynamicsSettings
from suites.runner import expand_cells
from suites.spec import apply_overrides, builtin_suites, load_suite, parse_suite, read_suite_table
from suites.validate import SpecError


def _table(**changes):
    table = {
        "name": "t",
        "description": "d",
        "models": ["mlp", "gru"],
        "seeds": [0, 1],
        "param_budget": 5000,
        "dynamics": {"tasks": ["pendulum-mass-length"], "arms": ["maml", "pretrain"], "meta_iterations": 3},
    }
    table.update(changes)
    return table


def test_builtin_suites_parse() -> None:
    assert {"quick", "mujoco", "full"} <= set(builtin_suites())
    for name in builtin_suites():
        spec = load_suite(name)
        assert spec.name == name
        assert spec.protocols


def test_quick_suite_has_every_model_and_three_seeds() -> None:
    from models import MODELS

    spec = load_suite("quick")
    assert set(spec.models) == set(MODELS)
    assert len(spec.seeds) == 3


def test_parse_builds_frozen_settings_and_cells() -> None:
    spec = parse_suite(_table(), "t.toml")
    (p,) = spec.protocols
    assert isinstance(p.settings, DynamicsSettings)
    assert p.settings.meta_iterations == 3
    cells = expand_cells(spec)
    assert len(cells) == 2 * 2 * 2  # models x arms x seeds
    assert len({c.cell_id for c in cells}) == len(cells)


def test_maml_adapter_shares_the_maml_cell() -> None:
    table = _table()
    table["dynamics"]["arms"] = ["maml", "maml+adapter", "pretrain"]
    cells = expand_cells(parse_suite(table, "t.toml"))
    assert {c.training_arm for c in cells} == {"maml", "pretrain"}
    assert {c.reported_arms for c in cells if c.training_arm == "maml"} == {("maml", "maml+adapter")}


def test_hash_changes_with_settings_not_description() -> None:
    a = parse_suite(_table(), "t.toml")
    b = parse_suite(_table(description="other"), "t.toml")
    table = _table()
    table["dynamics"]["meta_iterations"] = 4
    c = parse_suite(table, "t.toml")
    assert a.hash() == b.hash() != c.hash()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": ["mlp", "nope"]}, r"t\.toml: models: unknown value 'nope'; valid choices are \[.*'mlp'"),
        ({"seeds": [0, 0]}, r"t\.toml: seeds: expected a non-empty list of distinct"),
        ({"seeds": "0"}, r"seeds: expected .* got '0'"),
        ({"param_budget": 10}, r"param_budget: expected an int in \[1000, 10000000\], got 10"),
        ({"name": ""}, r"name: expected a non-empty string"),
        ({"colour": "red"}, r"unknown field\(s\) \['colour'\]"),
        ({"nonsense": {"a": 1}}, r"protocol table: unknown value 'nonsense'; valid choices are \['dynamics'"),
    ],
)
def test_top_level_errors(change, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse_suite(_table(**change), "t.toml")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tasks", ["moon-lander"],
         r"t\.toml: dynamics\.tasks: unknown value 'moon-lander'; valid choices are \[.*'pendulum-mass-length'"),
        ("arms", ["maml", "magic"],
         r"dynamics\.arms: unknown value 'magic'; valid choices are \['maml', 'maml\+adapter', 'pretrain'\]"),
        ("meta_iterations", "many", r"dynamics\.meta_iterations: expected an int, got 'many'"),
        ("meta_iterations", -3, r"meta_iterations: expected a positive number, got -3"),
        ("inner_lr", True, r"dynamics\.inner_lr: expected a number, got True"),
        ("meta_itterations", 3,
         r"dynamics: unknown field\(s\) \['meta_itterations'\]; valid fields are \[.*'meta_iterations'"),
        ("switch_at", 500, r"switch_at: expected less than stream_horizon"),
        ("adapter_optimizer", "rmsprop", r"adapter_optimizer: expected 'sgd' or 'adam', got 'rmsprop'"),
    ],
)
def test_protocol_errors(key, value, message) -> None:
    table = _table()
    table["dynamics"][key] = value
    with pytest.raises(SpecError, match=message):
        parse_suite(table, "t.toml")


def test_overrides_are_validated_like_the_file() -> None:
    table = apply_overrides(_table(), ["dynamics.meta_iterations=7", "param_budget=6000", "dynamics.first_order=true"])
    spec = parse_suite(table, "t.toml")
    assert spec.param_budget == 6000
    assert spec.protocols[0].settings.meta_iterations == 7
    assert spec.protocols[0].settings.first_order is True
    with pytest.raises(SpecError, match=r"dynamics\.meta_iterations: expected an int, got 'lots'"):
        parse_suite(apply_overrides(_table(), ["dynamics.meta_iterations=lots"]), "t.toml")
    with pytest.raises(SpecError, match="expected key=value"):
        apply_overrides(_table(), ["dynamics.meta_iterations"])
    with pytest.raises(SpecError, match="'policy' is not a protocol table"):
        apply_overrides(_table(), ["policy.iterations=3"])


def test_a_training_field_is_set_flat_in_its_protocol_table_only() -> None:
    """The dynamics and mpc settings share their training fields' declaration, not their values."""
    spec = load_suite("quick", overrides=["dynamics.inner_lr=0.2"])
    settings = {p.protocol: p.settings for p in spec.protocols}
    assert settings["dynamics"].inner_lr == 0.2 and settings["dynamics"].training().inner_lr == 0.2
    assert settings["mpc"].inner_lr == 0.1
    assert settings["dynamics"].training() != settings["mpc"].training()
    with pytest.raises(SpecError, match=r"mpc: inner_lr: expected a positive number, got -1\.0"):
        load_suite("quick", overrides=["mpc.inner_lr=-1"])


def test_load_suite_from_path_and_cli_lists(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(Path(builtin_suites()["quick"]).read_text().replace('name = "quick"', 'name = "mine"'))
    spec = load_suite(str(path), models=["mlp"], seeds=[5], tasks=["pendulum-mass-length"])
    assert (spec.name, spec.models, spec.seeds) == ("mine", ("mlp",), (5,))
    with pytest.raises(SpecError, match="neither a built-in suite"):
        load_suite(str(tmp_path / "missing.toml"))
    with pytest.raises(SpecError, match=r"--tasks .*unknown value 'ant-goal'"):
        load_suite("quick", tasks=["ant-goal"])
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        read_suite_table(str(bad))
