"""MIL graph passes slmpack runs on coremltools' program before serialization, one pass per file.

Each is a function ``(prog) -> int`` (how many rewrites it made; the count goes to the report).
``run_pass`` runs one inside coremltools' graph-pass scope, so the ops it creates inherit the scope
(debug) information of the ops they replace, which serialization requires.
"""
from __future__ import annotations


def run_pass(prog, fn, *args) -> int:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.scope import ScopeInfo, ScopeSource

    with mb.scope(ScopeInfo(source=ScopeSource.COREMLTOOLS_GRAPH_PASS, data=[f"slmpack::{fn.__name__}"])):
        return fn(prog, *args)
