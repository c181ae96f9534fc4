"""A tiny suite for runner tests: two models, two seeds, seconds to run."""

from __future__ import annotations

from pathlib import Path

TINY_SUITE = """
name = "tiny"
description = "runner tests"
models = ["mlp", "gru"]
seeds = [0, 1]
param_budget = 2000

[dynamics]
tasks = ["pendulum-mass-length"]
arms = ["maml", "pretrain", "maml+adapter"]
train_tasks = 4
test_tasks = 2
episodes_per_task = 2
support_episodes = 1
horizon = 20
sequence_length = 10
support_windows = 2
query_windows = 2
meta_iterations = 3
meta_batch = 2
eval_inner_steps = 2
log_every = 1
streams = 1
stream_horizon = 20
switch_at = 10
adapter_window = 5
timing_repeats = 2
"""


def write_tiny_suite(folder: Path, **replace: str) -> Path:
    text = TINY_SUITE
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / "tiny.toml"
    path.write_text(text)
    return path
