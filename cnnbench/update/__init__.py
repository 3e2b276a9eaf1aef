"""The model update of one iteration, below both the engine and the fast path that times it:

- ``step``: ``model_step``, autocast forward, fp32 loss, backward and optimizer step;
- ``graphs``: ``GraphedUpdate``, that update captured once as a CUDA graph and replayed.

Imports only torch, so the engine's step and the fast-path probe share it without importing each other.
"""
