"""The models' numerical kernels, apart from the models that read like their papers.

- ``scan``: parallel scans of the linear recurrence h_t = a_t h_{t-1} + b_t (chunked, with resets).
- ``two_level_scan``: the block scan of a short sequence without resets (MAML's windows).
- ``banded_attention``: windowed causal attention in blocks, its masks and ``cache_fill``.
"""
