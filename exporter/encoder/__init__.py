"""Encoder models (BERT, DistilBERT, RoBERTa / XLM-R, sentence-transformers directories).

spec.py: config.json + sentence-transformers layout -> EncoderSpec; reference.py: our own torch
module (pooling and normalization inside); program.py: the traced encoder program; sentences.py:
the held-out sentence set; ladder.py: encoder validation; pipeline.py: the encoder export flow.
"""
