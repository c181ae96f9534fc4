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


# ---- every field checked at load time, before anything runs

NAME_EXPECTED = (
    "name: expected a non-empty string of at most 64 letters, digits, '_', '.' or '-', starting with a letter or "
    "digit, got "
)


@pytest.mark.parametrize("name", [".", "..", "a/b", "a\nb", "a\x00b", " ", "x" * 65, "-x", ".x", "ä", "a b"])
def test_suite_names_that_cannot_be_folders_are_refused(name: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_suite(_table(name=name), "t.toml")
    assert str(info.value) == f"t.toml: {NAME_EXPECTED}{name!r}"


@pytest.mark.parametrize("name", ["quick", "a", "my-suite_2.v1", "x" * 64, "0"])
def test_safe_suite_names_pass(name: str) -> None:
    assert parse_suite(_table(name=name), "t.toml").name == name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": ["mlp", "mlp"]}, "t.toml: models: expected distinct values, got 'mlp' twice"),
        ({"seeds": [2**31]}, "t.toml: seeds: expected ints in [0, 2147483647], got 2147483648"),
        ({"seeds": [2**63 + 5]}, "t.toml: seeds: expected ints in [0, 2147483647], got 9223372036854775813"),
        ({"seeds": [-1]}, "t.toml: seeds: expected ints in [0, 2147483647], got -1"),
        ({"seeds": [0, 0]}, "t.toml: seeds: expected a non-empty list of distinct ints in [0, 2147483647], got [0, 0]"),
        ({"description": "two\nlines"},
         "t.toml: description: expected one line of at most 500 printable characters, got 'two\\nlines'"),
        ({"dynamics": 3}, "t.toml: dynamics: expected a table [dynamics], got 3"),
        ({"models": {"a": 1}}, "t.toml: models: expected a value, not a table, got {'a': 1}"),
    ],
)  # fmt: skip
def test_new_top_level_checks(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_suite(_table(**change), "t.toml")
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("inner_lr", float("inf"), "t.toml: dynamics.inner_lr: expected a finite number, got inf"),
        ("outer_lr", float("nan"), "t.toml: dynamics.outer_lr: expected a finite number, got nan"),
        ("adapter_lr", -float("inf"), "t.toml: dynamics.adapter_lr: expected a finite number, got -inf"),
        ("meta_iterations", float("inf"), "t.toml: dynamics.meta_iterations: expected an int, got inf"),
        ("tasks", ["pendulum-mass-length"] * 2,
         "t.toml: dynamics.tasks: expected distinct values, got 'pendulum-mass-length' twice"),
        ("arms", ["maml", "maml"], "t.toml: dynamics.arms: expected distinct values, got 'maml' twice"),
        ("support_episodes", 4, "t.toml: dynamics: support_episodes: expected between 1 and 3 (episodes_per_task - 1), "
                                "got 4"),
        ("sequence_length", 101, "t.toml: dynamics: sequence_length: expected at most the horizon 100, got 101"),
        ("support_windows", 9, "t.toml: dynamics: support_windows: expected at most 8 (support_episodes 2 x 4 windows "
                               "of sequence_length 25 in horizon 100), got 9"),
        ("query_windows", 9, "t.toml: dynamics: query_windows: expected at most 8 (episodes_per_task - "
                             "support_episodes 2 x 4 windows of sequence_length 25 in horizon 100), got 9"),
        ("meta_batch", 33, "t.toml: dynamics: meta_batch: expected at most train_tasks 32, got 33"),
        ("horizon", 10**9, "t.toml: dynamics: horizon: expected at most 1000000, got 1000000000"),
        ("test_tasks", 101, "t.toml: dynamics: test_tasks: expected at most 100, got 101"),
        ("adapter_window", 201, "t.toml: dynamics: adapter_window: expected at most stream_horizon 200, got 201"),
        ("sub", {"a": 1}, None),
    ],
)  # fmt: skip
def test_new_protocol_checks(key: str, value: object, message: str | None) -> None:
    table = _table()
    table["dynamics"][key] = value
    with pytest.raises(SpecError) as info:
        parse_suite(table, "t.toml")
    if message is not None:
        assert str(info.value) == message
    else:
        assert str(info.value).startswith("t.toml: dynamics: unknown field(s) ['sub']")


def test_an_int_beyond_float_range_is_not_a_finite_number() -> None:
    table = _table()
    table["dynamics"]["inner_lr"] = 10**400
    with pytest.raises(SpecError) as info:
        parse_suite(table, "t.toml")
    message = str(info.value)
    assert message.startswith("t.toml: dynamics.inner_lr: expected a finite number, got 1000000") and len(message) < 200


def test_the_mpc_oracle_arm_is_checked_against_its_episodes() -> None:
    table = _table(mpc={"tasks": ["pendulum-mass-length"], "arms": ["maml", "oracle"], "oracle_episodes": 2})
    with pytest.raises(SpecError) as info:
        parse_suite(table, "t.toml")
    assert str(info.value) == ("t.toml: mpc: oracle_episodes: expected more than support_episodes 2 with the oracle "
                               "arm, got 2")  # fmt: skip
    table["mpc"]["arms"] = ["maml", "random"]  # the field is unused without the oracle arm
    parse_suite(table, "t.toml")


def test_timing_lists_are_distinct_and_collect_tasks_known() -> None:
    table = _table(timing={"seq_lengths": [8, 16, 8]})
    with pytest.raises(SpecError, match=r"^t\.toml: timing: seq_lengths: expected distinct values, got 8 twice$"):
        parse_suite(table, "t.toml")
    table = _table(timing={"collect_tasks": ["nope"]})
    with pytest.raises(SpecError, match=r"^t\.toml: timing: collect_tasks: unknown value 'nope'; valid choices are "):
        parse_suite(table, "t.toml")


def test_command_line_lists_are_checked_with_their_option(tmp_path: Path) -> None:
    cases = [
        ({"models": ["mlp", "mlp"]}, "--models: expected distinct values, got 'mlp' twice"),
        ({"models": []}, "--models: expected a non-empty list of names from ['gru', 'lstm', 'mlp', 'neural-state', "
                         "'ssm', 'transformer'], got []"),
        ({"seeds": [2**40]}, "--seeds: expected ints in [0, 2147483647], got 1099511627776"),
        ({"tasks": []}, "--tasks: expected a non-empty list of task names, got []"),
        ({"tasks": ["point-nav-2d", "point-nav-2d"]}, "--tasks: expected distinct values, got 'point-nav-2d' twice"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(SpecError) as info:
            load_suite("quick", **kwargs)
        assert str(info.value) == message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name = \"q\xffick\"\n", "expected UTF-8 text, got byte 0xff at offset 9"),
        ("models = " + "[" * 2000 + "]" * 2000, "not valid TOML: nested too deeply"),
        ("[" + ".".join(["a"] * 20) + "]\nb = 1\n", "expected tables and lists nested at most 8 levels deep, got more"),
        ("param_budget = " + "9" * 5000, "not valid TOML: Exceeds the limit (4300 digits) for integer string "
                                         "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to "
                                         "increase the limit"),
        ("# " + "x" * (1 << 20), "expected a suite file of at most 1048576 bytes, got 1048578 bytes"),
    ],
    ids=["not-utf8", "nested-arrays", "nested-tables", "int-digits", "too-large"],
)  # fmt: skip
def test_unreadable_suite_files_are_one_line_naming_the_file(content: bytes | str, message: str, tmp_path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError) as info:
        read_suite_table(str(path))
    assert str(info.value) == f"{path}: {message}"


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_bytes(b"\xef\xbb\xbf" + Path(builtin_suites()["quick"]).read_bytes())
    assert load_suite(str(path)).name == "quick"


@pytest.mark.parametrize("name", ["qu\x00ick", "x" * 5000], ids=["nul", "long"])
def test_suite_paths_the_file_system_refuses(name: str) -> None:
    with pytest.raises(SpecError, match=r"^suite: '.* is neither a built-in suite \['full', 'mujoco', 'quick'\] "
                                        r"nor a TOML file$"):  # fmt: skip
        read_suite_table(name)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("=3", "--set '=3': expected a key like dynamics.meta_iterations, got ''"),
        ("dynamics.=3", "--set 'dynamics.=3': expected a key like dynamics.meta_iterations, got 'dynamics.'"),
        ("dynamics=3",
         "--set dynamics=3: 'dynamics' is a protocol table; set its fields, e.g. dynamics.<field>=<value>"),
        ("v=" + "[" * 50 + "]" * 50, "expected a value nested at most 8 levels deep"),
        ("v=" + "[" * 5000 + "]" * 5000, "expected a value nested at most 8 levels deep"),
    ],
    ids=["no-key", "empty-field", "table", "nested-50", "nested-5000"],
)  # fmt: skip
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        apply_overrides(_table(), [override])
    assert str(info.value).endswith(message)
