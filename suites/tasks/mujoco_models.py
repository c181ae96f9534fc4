"""Compile each MuJoCo XML once per process and hand every new env a copy of the result.

Copying a compiled model is much cheaper than compiling its XML, and a data-collection pool
builds many envs of one model. ``set_task`` edits each env's own copy, so the cached original
is never modified.
"""

from __future__ import annotations

import copy

import mujoco

_COMPILED: dict[str, mujoco.MjModel] = {}


def compiled_model(path: str) -> mujoco.MjModel:
    """A fresh copy of the model compiled from ``path`` (compiled on first use)."""
    if path not in _COMPILED:
        _COMPILED[path] = mujoco.MjModel.from_xml_path(path)
    return copy.deepcopy(_COMPILED[path])


class CachedModelMixin:
    """Overrides gymnasium ``MujocoEnv._initialize_simulation`` (gymnasium 1.x) to use the cache.

    Same model, same data as gymnasium's own method, which compiles the XML on every call.
    """

    fullpath: str
    width: int
    height: int

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = compiled_model(self.fullpath)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)
