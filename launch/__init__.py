"""The trainer: `launch/train.py` under the `deepspeed` launcher, its loop, records and checkpoints."""
