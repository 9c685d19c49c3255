"""Frozen language models for SPAE prompting: one interface, JAX-native and remote backends."""

from spae.lm._base import LanguageModel, LanguageModelBase, TextTokenizer, Trie, choose_next
