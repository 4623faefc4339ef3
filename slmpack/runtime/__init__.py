"""Torch-free runtime kit shared by host validation and on-device runners."""
