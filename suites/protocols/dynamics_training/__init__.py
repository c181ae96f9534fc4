"""Training of dynamics models, shared by the ``dynamics`` and ``mpc`` protocols.

Files: settings.py (``TrainingSettings``, the training fields that the dynamics and mpc
protocols' settings build on), windows.py (collected episodes cut into support / query windows),
train.py (``train_maml`` and ``pretrain`` loops, ``train_dynamics`` keyed on everything that
determines the weights, and ``ModelStore``, which lets cells of a run share one trained model).
Imports: meta, models, suites.data, suites.tasks, suites.storage.
"""
