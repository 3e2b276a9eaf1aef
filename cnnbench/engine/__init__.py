"""The training engine's units, each small and public (see docs/design.md):

- ``parts``: build everything a run trains with from a config (data on the device, model, optimizer,
  schedule, augmentation, precision);
- ``step``: one training iteration and the evaluation pass: the code `train` runs and `bench` times;
- ``state``: what a checkpoint holds and how a run continues from it;
- ``records``: what a run writes for people and tools (metrics.json, env.json, TensorBoard, progress).

``cnnbench.engine.trainer`` composes them into the loop. This package imports none of its modules here, so
importing one unit never pulls in the others.
"""
