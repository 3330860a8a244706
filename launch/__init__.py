"""The trainer: `launch/train.py` for the `deepspeed` launcher, its loop, records, checkpoints."""
