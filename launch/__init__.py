"""Entry points: the DeepSpeed trainer (`launch/train.py`) and the `inforeg-bench` profiler."""
