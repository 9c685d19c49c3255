"""Frozen JAX teachers: CLIP and SigLIP image-text models and a BERT/MiniLM text encoder.

All load official checkpoint formats (HF safetensors folders, big_vision npz) without torch, TensorFlow or
HF Flax, and match transformers' outputs to float precision (see tests/test_teachers_parity.py).
"""

from spae.teachers._base import DEFAULT_TEMPLATES, RelevanceFn, Teacher, default_cache_dir
from spae.teachers._bert import BertConfig, BertTextEncoder, bert_embed, bert_hidden_states
from spae.teachers._bpe import CLIPTokenizer
from spae.teachers._clip import CLIPConfig, CLIPTeacher, clip_image_features, clip_text_features
from spae.teachers._lit import LiTConfig, LiTTeacher, init_lit_params, lit_image_features
from spae.teachers._load import SPEC_HELP, load
from spae.teachers._siglip import (SigLIPConfig, SigLIPTeacher, SigLIPTokenizer, siglip_image_features,
                                   siglip_text_features)
from spae.teachers._wordpiece import WordPieceTokenizer, basic_tokenize

__all__ = [
    "DEFAULT_TEMPLATES", "RelevanceFn", "LiTConfig", "LiTTeacher", "init_lit_params", "lit_image_features", "Teacher",
    "default_cache_dir", "load", "SPEC_HELP",
    "CLIPTeacher", "CLIPConfig", "CLIPTokenizer", "clip_image_features", "clip_text_features",
    "SigLIPTeacher", "SigLIPConfig", "SigLIPTokenizer", "siglip_image_features", "siglip_text_features",
    "BertTextEncoder", "BertConfig", "bert_embed", "bert_hidden_states", "WordPieceTokenizer", "basic_tokenize",
]
