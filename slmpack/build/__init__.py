"""`slmpack build`: a recipe of packages, built incrementally through a content-addressed cache.

recipe.py  slmpack.toml / [tool.slmpack] -> typed Recipe of PackageEntry, expanded into BuildUnits
inputs.py  the cache key of a unit: sha256 of every input (checkpoint, tokenizer, chat, data files,
           recipe entry, installed toolchain, slmpack version + source)
cache.py   the store: objects/<key>/ (verified packages), file locks, atomic publish
command.py planning, local/Ray execution, reporting, the CLI command
"""
