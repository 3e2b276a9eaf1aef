"""`cnnbench config -m`: a Hydra launcher that lists a sweep's jobs instead of running them."""
