"""GGUF input: a local ``.gguf`` file (llama.cpp's format) exported like a model directory.

``reader`` (bounded header walk + ``gguf.GGUFReader``) -> ``to_hf`` (config.json, HF tensor names,
llama q/k un-permutation) + ``tokenizer`` (tokenizer.json, chat template, stop tokens) ->
``source`` (a temporary model directory the pipeline exports); ``plan`` (``--quant from-gguf``:
a QuantPlan holding the file's own Q8_0 / Q4_0 integers).
"""
