"""The torch-free runtime kit: typed errors, manifest and result records (standard library only)."""
