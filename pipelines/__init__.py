"""Loaders over preprocessed shards (FFCV, DALI); a plain-PyTorch reference; one batch contract."""
