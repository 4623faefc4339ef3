"""Torch-free runtime kit (package loading and runners shared by host validation and devices)."""
