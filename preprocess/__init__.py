"""Offline preprocessing: raw video, audio and text -> FFCV `.beton` files and DALI tar shards."""

__version__ = "0.1.0"
