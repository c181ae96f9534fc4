"""The ``dynamics`` protocol: meta-learned next-observation-change models and how they adapt.

Files: protocol.py (``DynamicsSettings`` and ``run(cell)``: query error after k inner steps on
held-out tasks, online error around a task switch with and without the ``Adapter``). The model
training it shares with the mpc protocol lives in ``suites.protocols.dynamics_training``.
Imports: meta, adaptation, models, suites.data, suites.tasks, suites.protocols.dynamics_training.
"""
