"""ONNX Runtime graph fusions, applied to the exported model (onnx_ir) by ``targets/onnx/lower.py``.

One rewrite per file, each an onnxscript rewrite rule written as pattern / check / rewrite,
whose ``check`` records why it declined. ``lower.fuse`` lists and orders them.
"""
