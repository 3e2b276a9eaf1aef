"""What cnnbench adds to Hydra's launchers (conf/hydra/launcher/): a sweep job's GPU on a machine that
runs several jobs at once.

``slots`` gives each job of ``hydra/launcher=gpus`` (or joblib) a GPU slot through lock files; ``mps``
tells whether NVIDIA MPS runs; ``measured`` keeps the GPU check's jobs-per-GPU measurement per GPU model;
``resolvers`` registers ``${cnnbench.sweep_jobs:K}``, the launcher's ``n_jobs``; ``devices`` lists the
GPUs a process sees. The engine asks ``slots`` for a job's device; nothing here imports the engine.
"""
