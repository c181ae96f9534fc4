"""Planners: random shooting picks the best candidate, CEM beats it on a toy cost, bounds hold;
non-finite scores rank last, and a round without a finite one raises PlanningError."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import Tensor

from suites.protocols.mpc import Planner, PlannerConfig, cem, random_shooting
from suites.protocols.mpc.planners import PlanningError

LOW, HIGH = torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 2.0])


def toy_score(target: Tensor):
    """Return -||a - target||^2 per candidate: the best sequence is ``target`` itself."""
    return lambda actions: -(actions - target).pow(2).sum((1, 2))


def test_random_shooting_returns_the_best_candidate() -> None:
    config = PlannerConfig("random", horizon=5, candidates=32)
    best = random_shooting(lambda a: a.sum((1, 2)), LOW, HIGH, config, torch.Generator().manual_seed(3))
    # the same generator draws the same candidates: the chosen one has the largest sum among them
    candidates = LOW + (HIGH - LOW) * torch.rand(32, 5, 2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(best, candidates[candidates.sum((1, 2)).argmax()])


def test_cem_beats_random_shooting_on_a_toy_cost_with_equal_samples() -> None:
    horizon, candidates, iterations = 10, 64, 5
    gaps = []
    for seed in range(5):
        target = LOW + (HIGH - LOW) * torch.rand(horizon, 2, generator=torch.Generator().manual_seed(100 + seed))
        score = toy_score(target)
        rs = PlannerConfig("random", horizon, candidates * iterations)  # the same number of scored samples
        ce = PlannerConfig("cem", horizon, candidates, iterations, elites=8)
        rs_cost = -float(score(random_shooting(score, LOW, HIGH, rs, torch.Generator().manual_seed(seed))[None]))
        ce_cost = -float(score(cem(score, LOW, HIGH, ce, torch.Generator().manual_seed(seed))[None]))
        gaps.append(rs_cost / ce_cost)
    # measured: CEM's squared distance is 5x to 20x smaller than random shooting's on every seed
    assert min(gaps) > 3.0, gaps


def test_cem_stays_in_bounds_and_converges_on_an_edge() -> None:
    target = torch.tensor([[5.0, -5.0]]).expand(4, 2)  # outside the box: the optimum is its corner
    plan = cem(toy_score(target), LOW, HIGH, PlannerConfig("cem", 4, 64, 6, 8), torch.Generator().manual_seed(0))
    assert bool(((plan >= LOW) & (plan <= HIGH)).all())
    corner = torch.tensor([[1.0, -2.0]]).expand(4, 2)
    start = (corner - (LOW + HIGH) / 2).pow(2).sum()  # from the middle of the box, where CEM starts: 20
    # measured 0.5 after 6 rounds: the mean moves to the corner, within 3% of where it started
    assert float((plan - corner).pow(2).sum()) < 0.1 * float(start)


def test_non_finite_scores_are_never_chosen() -> None:
    def score(actions: Tensor) -> Tensor:
        s = actions.sum((1, 2))
        return torch.where(s > 0, torch.full_like(s, float("nan")), s)

    best = random_shooting(score, LOW, HIGH, PlannerConfig("random", 3, 64), torch.Generator().manual_seed(0))
    assert float(best.sum()) <= 0


def test_planner_warm_start_shifts_the_previous_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    import suites.protocols.mpc.planners as planners

    means: list[Tensor | None] = []
    plans = iter([torch.arange(8.0).reshape(4, 2) / 10, torch.zeros(4, 2), torch.zeros(4, 2)])

    def fake_cem(score, low, high, config, generator, mean=None):  # type: ignore[no-untyped-def]
        means.append(mean)
        return next(plans)

    monkeypatch.setattr(planners, "cem", fake_cem)
    planner = Planner(PlannerConfig("cem", 4, 32, 3, 4), LOW, HIGH, seed=0)
    first = planner.plan(lambda a: a.sum((1, 2)))
    planner.plan(lambda a: a.sum((1, 2)))
    assert torch.equal(first, torch.tensor([0.0, 0.1]))
    assert means[0] is None
    # the second plan starts from the first shifted by one step, the middle of the box appended
    expected = torch.cat([torch.arange(8.0).reshape(4, 2)[1:] / 10, ((LOW + HIGH) / 2)[None]])
    assert means[1] is not None and torch.equal(means[1], expected)
    planner.reset()
    planner.plan(lambda a: a.sum((1, 2)))
    assert means[2] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "mppi"}, "method"),
        ({"horizon": 0}, "horizon"),
        ({"candidates": 4, "elites": 8}, "elites"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PlannerConfig(**kwargs)


def test_bad_bounds_and_scores_raise() -> None:
    config = PlannerConfig("random", 3, 8)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="action bounds"):
        random_shooting(lambda a: a.sum((1, 2)), HIGH, LOW, config, g)
    with pytest.raises(ValueError, match=r"score: expected one return per candidate, shape \(8,\)"):
        random_shooting(lambda a: a.sum(2), LOW, HIGH, config, g)


def test_non_finite_candidates_rank_below_every_finite_one() -> None:
    # +inf and -inf are non-finite too: a +inf predicted return (a model blowing up) is never chosen
    def score(actions: Tensor) -> Tensor:
        s = actions.sum((1, 2))
        return torch.where(s > 1, torch.full_like(s, float("inf")), torch.where(s < -1, float("nan"), s))

    config = PlannerConfig("random", 3, 64)
    best = random_shooting(score, LOW, HIGH, config, torch.Generator().manual_seed(0))
    candidates = LOW + (HIGH - LOW) * torch.rand(64, 3, 2, generator=torch.Generator().manual_seed(0))
    sums = candidates.sum((1, 2))
    finite = sums[(sums <= 1) & (sums >= -1)]
    assert float(best.sum()) == pytest.approx(float(finite.max()))


def test_cem_refits_on_finite_elites_only() -> None:
    # only the first 3 candidates score finite, fewer than the 8 elites; with one round and no
    # momentum the plan is their mean: no nan-scored candidate is an elite
    config = PlannerConfig("cem", 2, 32, iterations=1, elites=8, momentum=0.0)

    def score(actions: Tensor) -> Tensor:
        s = -actions.pow(2).sum((1, 2))
        s[3:] = float("nan")
        return s

    plan = cem(score, LOW, HIGH, config, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    mid, half = (LOW + HIGH) / 2, (HIGH - LOW) / 2
    actions = torch.maximum(torch.minimum(mid + half * torch.randn(32, 2, 2, generator=g), HIGH), LOW)
    assert torch.allclose(plan, actions[:3].mean(0))


def test_all_non_finite_scores_raise_a_planning_error_naming_the_round() -> None:
    g = torch.Generator().manual_seed(0)
    nan = lambda a: torch.full((a.shape[0],), float("nan"))  # noqa: E731
    with pytest.raises(PlanningError, match=r"all 8 candidate returns are non-finite \(8 nan\) in random shooting"):
        random_shooting(nan, LOW, HIGH, PlannerConfig("random", 3, 8), g)
    mixed = torch.tensor([float("nan"), float("inf"), -float("inf"), float("nan")] * 2)
    with pytest.raises(PlanningError, match=r"\(4 nan, 2 \+inf, 2 -inf\) in CEM round 1 of 2"):
        cem(lambda a: mixed, LOW, HIGH, PlannerConfig("cem", 3, 8, 2, 4), g)
    calls = []

    def second_round_fails(actions: Tensor) -> Tensor:
        calls.append(1)
        return actions.sum((1, 2)) if len(calls) == 1 else nan(actions)

    planner = Planner(PlannerConfig("cem", 3, 8, 3, 4), LOW, HIGH, seed=0)
    with pytest.raises(PlanningError, match="in CEM round 2 of 3") as err:
        planner.plan(second_round_fails)
    assert err.value.step is None and planner._previous is None  # no plan kept from a failed step


def test_planning_error_carries_its_step_and_pickles() -> None:
    err = PlanningError("all 4 candidate returns are non-finite (4 nan) in random shooting")
    at = err.at_step(37).because("non-finite: the model's state")
    assert at.step == 37
    assert str(at) == ("control step 37: all 4 candidate returns are non-finite (4 nan) in random shooting; "
                       "non-finite: the model's state")  # fmt: skip
    back = pickle.loads(pickle.dumps(at))
    assert (type(back), back.step, str(back)) == (PlanningError, 37, str(at))
