"""Performance benchmark (not a test): run on demand with ``python -m bench.perf.run``.

Every variant (PyTorch eager, each slmpack target runtime, peers in their own venvs) runs in its
own long-lived worker process with pinned threads; repetitions are interleaved across variants
and reported as medians. Results: ``bench/results/perf-<date>.json`` and ``.md``.
"""
