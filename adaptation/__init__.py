"""Test-time adaptation: the guarded ``Adapter``, its config, strategies and monitor.

    from adaptation import Adapter, AdaptationConfig
    adapter = Adapter(model, AdaptationConfig(lr=1e-3, num_steps=5, trust_region=1.0))
    info = adapter.adapt({"x": x, "y": y})

Files: config.py (``AdaptationConfig``), strategies.py (registry: none / online / tent),
params.py (which parameters adapt), guards.py (clip, step bound, trust region, rollback),
monitor.py (meta-features), adapter.py (``Adapter``). Imports only ``models`` and torch.
"""

from adaptation.adapter import Adapter
from adaptation.config import AdaptationConfig, ParamFilter
from adaptation.monitor import FeatureShift, categorical_features, gaussian_features
from adaptation.strategies import STRATEGIES, Objective, Strategy, make_strategy, register_strategy

__all__ = [
    "STRATEGIES",
    "AdaptationConfig",
    "Adapter",
    "FeatureShift",
    "Objective",
    "ParamFilter",
    "Strategy",
    "categorical_features",
    "gaussian_features",
    "make_strategy",
    "register_strategy",
]
