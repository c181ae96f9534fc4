"""The model zoo: every sequence model behind one stateful interface.

    from models import make_model
    model = make_model("ssm", input_dim=4, output_dim=3, param_budget=50_000)
    state = model.init_state(batch_size=8)
    y, state = model(x, state)              # x (B, T, 4) -> y (B, T, 3)
"""

from models.base import ModelConfig, SequenceModel, State
from models.registry import MODELS, count_params, get_model_class, load_model, make_model

__all__ = [
    "MODELS",
    "ModelConfig",
    "SequenceModel",
    "State",
    "count_params",
    "get_model_class",
    "load_model",
    "make_model",
]
