"""A synthetic run directory with realistic rows for all four protocols (layout: results/README.md).

Values follow the shapes a real run has (errors falling with inner steps, a jump at the task
switch that the Adapter shortens, returns rising with adaptation, times growing with T), with
seeded noise, so every section and figure of a report has something to show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = {"mlp": 0.9, "neural-state": 0.75, "ssm": 0.5}
"""Model name -> a quality factor (lower = better errors)."""
PARAMS = {"mlp": 49_800, "neural-state": 50_300, "ssm": 51_100}
DYN_TASKS = ["pendulum-mass-length", "halfcheetah-crippled-joint"]
POLICY_TASKS = ["point-nav-2d", "halfcheetah-vel"]
MPC_TASKS = ["halfcheetah-crippled-joint"]
SUITE = "synthetic"


def _rows(seeds: list[int], rng: np.random.Generator) -> list[tuple]:
    out: list[tuple] = []

    def add(
        protocol: str,
        task: str,
        model: str,
        arm: str,
        seed: int,
        metric: str,
        step: int,
        value: float,
    ) -> None:
        out.append((SUITE, protocol, task, model, arm, seed, metric, int(step), float(value)))

    for model, q in MODELS.items():
        for seed in seeds:
            for task in DYN_TASKS:
                for arm, decay in (("maml", 0.7), ("pretrain", 0.95), ("maml+adapter", 0.6)):
                    for k in range(4):
                        add(
                            "dynamics",
                            task,
                            model,
                            arm,
                            seed,
                            "query_mse",
                            k,
                            q * 0.8 * decay**k * rng.lognormal(0, 0.08),
                        )
                for arm, recover in (("maml", 0.0), ("maml+adapter", 0.08)):
                    for t in range(-10, 30):
                        err = 0.2 * q if t < 0 else q * (0.2 + 0.8 * np.exp(-recover * t))
                        add(
                            "dynamics",
                            task,
                            model,
                            arm,
                            seed,
                            "online_mse",
                            t,
                            err * rng.lognormal(0, 0.1),
                        )
                for it in range(0, 40, 2):
                    add(
                        "dynamics",
                        task,
                        model,
                        "maml",
                        seed,
                        "meta_train_loss",
                        it,
                        q * (0.3 + np.exp(-it / 10)) * rng.lognormal(0, 0.05),
                    )
                add(
                    "dynamics",
                    task,
                    model,
                    "maml",
                    seed,
                    "time_meta_train_s",
                    0,
                    20 * q * rng.lognormal(0, 0.1),
                )
                add(
                    "dynamics",
                    task,
                    model,
                    "maml",
                    seed,
                    "time_adapt_ms",
                    0,
                    5 * q * rng.lognormal(0, 0.1),
                )
                add(
                    "dynamics",
                    task,
                    model,
                    "maml",
                    seed,
                    "time_step_ms",
                    0,
                    0.2 * q * rng.lognormal(0, 0.1),
                )
                add("dynamics", task, model, "maml", seed, "params", 0, PARAMS[model])
            for task, (lo, hi) in zip(POLICY_TASKS, ((-40.0, -3.0), (-130.0, -60.0)), strict=True):
                for k in range(4):
                    frac = (1 - q) * (1 - 0.5**k)
                    add(
                        "policy",
                        task,
                        model,
                        "maml",
                        seed,
                        "return",
                        k,
                        lo + (hi - lo) * frac + rng.normal(0, 2),
                    )
                for it in range(0, 30, 3):
                    add(
                        "policy",
                        task,
                        model,
                        "maml",
                        seed,
                        "meta_train_return",
                        it,
                        lo + (hi - lo) * (1 - q) * it / 30 + rng.normal(0, 2),
                    )
            for task in MPC_TASKS:
                for arm, r in (
                    ("unadapted", -50),
                    ("maml", 100),
                    ("maml+adapter", 150),
                    ("oracle", 300),
                ):
                    add(
                        "mpc",
                        task,
                        model,
                        arm,
                        seed,
                        "return",
                        0,
                        r * (1.5 - q) + rng.normal(0, 10),
                    )
                    if arm != "oracle":
                        for t in range(0, 50, 5):
                            add(
                                "mpc",
                                task,
                                model,
                                arm,
                                seed,
                                "model_error",
                                t,
                                q * (1 + 300 / (r + 100)) * rng.lognormal(0, 0.1),
                            )
                add("mpc", task, model, "maml", seed, "plan_ms", 0, 12 * rng.lognormal(0, 0.1))
            slope = 1.0 if model == "ssm" else 1.3
            for T in (64, 128, 256, 512, 1024):
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "fwd_bwd_ms",
                    T,
                    0.02 * q * T**slope * rng.lognormal(0, 0.05),
                )
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "peak_mem_mb",
                    T,
                    0.05 * T * rng.lognormal(0, 0.02),
                )
            for H in (32, 64, 128, 256):
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "fwd_bwd_ms_hidden",
                    H,
                    0.01 * H**1.6 * rng.lognormal(0, 0.05),
                )
            for s in range(5):
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "step_latency_ms_b1",
                    s,
                    0.1 * q * rng.lognormal(0, 0.1),
                )
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "step_latency_ms_b32",
                    s,
                    0.3 * q * rng.lognormal(0, 0.1),
                )
            for n in (1, 4, 16):
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "maml_update_ms_vmap",
                    n,
                    (5 + 2 * n) * rng.lognormal(0, 0.05),
                )
                add(
                    "timing",
                    "timing",
                    model,
                    "timing",
                    seed,
                    "maml_update_ms_loop",
                    n,
                    7 * n * rng.lognormal(0, 0.05),
                )
    for seed in seeds:
        add(
            "timing",
            "halfcheetah-vel",
            "mlp",
            "timing",
            seed,
            "collect_steps_per_s",
            0,
            6000 * rng.lognormal(0, 0.05),
        )
    return out


def make_run_dir(path: Path, seeds: int = 3, failed: int = 0, seed: int = 0) -> Path:
    """Write a synthetic run directory.

    Args:
        path: the directory to create.
        seeds: runs per (task, model, arm).
        failed: how many of the ssm dynamics cells on the first task fail (their rows are
            removed; the cells table records the error and traceback).
        seed: seeds the noise.

    Returns:
        ``path``.
    """
    rng = np.random.default_rng(seed)
    seed_list = list(range(seeds))
    rows = pd.DataFrame(
        _rows(seed_list, rng),
        columns=["suite", "protocol", "task", "model", "arm", "seed", "metric", "step", "value"],
    )
    cells = (
        rows.groupby(["suite", "protocol", "task", "model", "seed"], as_index=False)
        .size()
        .drop(columns="size")
    )
    cells["training_arm"] = "all"
    cells["cell_id"] = [f"{r.protocol}-{r.task}-{r.model}-s{r.seed}" for r in cells.itertuples()]
    cells["status"] = "ok"
    cells["wall_time_s"] = rng.uniform(1, 10, len(cells))
    cells["params"] = cells["model"].map(PARAMS)
    cells["error"] = ""
    cells["traceback"] = ""
    bad = cells.index[
        (cells["protocol"] == "dynamics")
        & (cells["model"] == "ssm")
        & (cells["task"] == DYN_TASKS[0])
    ][:failed]
    for i in bad:
        cells.loc[i, "status"] = "failed"
        cells.loc[i, "error"] = "RuntimeError: loss is not finite at meta-iteration 17"
        cells.loc[i, "traceback"] = "Traceback (most recent call last):\n  ...\nRuntimeError: loss"
        c = cells.loc[i]
        rows = rows.loc[
            ~(
                (rows["protocol"] == c["protocol"])
                & (rows["task"] == c["task"])
                & (rows["model"] == c["model"])
                & (rows["seed"] == c["seed"])
            )
        ]
    path.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(path / "rows.parquet")
    cells.to_parquet(path / "cells.parquet")
    suite = {
        "name": SUITE,
        "models": list(MODELS),
        "seeds": seed_list,
        "protocols": ["dynamics", "policy", "mpc", "timing"],
        "param_budget": 50_000,
    }
    tasks = [
        {
            "name": "pendulum-mass-length",
            "family": "dynamics shift",
            "parameters": "mass, length ~ U[0.5, 2.0]",
            "source": "Pendulum-v1",
        },
        {
            "name": "halfcheetah-crippled-joint",
            "family": "dynamics shift",
            "parameters": "one of 6 actuators disabled",
            "source": "Nagabandi et al. 2019",
        },
        {
            "name": "point-nav-2d",
            "family": "reward",
            "parameters": "goal ~ U[-0.5, 0.5]^2",
            "source": "Finn et al. 2017",
        },
        {
            "name": "halfcheetah-vel",
            "family": "reward",
            "parameters": "v* ~ U[0, 2]",
            "source": "Finn et al. 2017",
        },
    ]
    meta = {
        "versions": {"python": "3.11.9", "torch": "2.13.0", "numpy": "2.4.6"},
        "git_commit": "0123456789abcdef",
        "host": "testhost",
        "threads": 1,
        "suite_hash": "deadbeef",
        "wall_time_s": 123.4,
        "suite": suite,
        "tasks": tasks,
    }
    (path / "meta.json").write_text(json.dumps(meta, indent=2))
    (path / "suite.toml").write_text(
        f'name = "{SUITE}"\nmodels = {list(MODELS)}\nseeds = {seed_list}\n'
    )
    return path
