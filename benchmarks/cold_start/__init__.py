"""Cold start of an on-demand model on a real single-node Slurm (``python -m
benchmarks.cold_start``)."""
