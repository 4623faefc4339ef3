"""`slmpack build`: a recipe of packages, built incrementally through a content-addressed cache.

recipe.py  slmpack.toml / [tool.slmpack] -> typed Recipe of PackageEntry, expanded into BuildUnits
inputs.py  the cache key of a unit: sha256 of every input (checkpoint, tokenizer, chat, data files,
           recipe entry, installed toolchain, slmpack version + source)
cache.py   the store: objects/<key>/ (verified packages), file locks, atomic publish
unit.py    one package build into the cache (the same function on every executor)
resources.py what one build needs: memory (fit estimate) and CPUs (target), for Ray tasks
executor.py where builds run: local processes or Ray (ray_executor.py); retries; one publish path
command.py planning, publishing, reporting, the CLI command
"""
