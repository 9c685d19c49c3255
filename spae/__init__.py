"""spae: Semantic Pyramid AutoEncoder — images as words of a frozen LLM vocabulary, and back.

Core: `Vocabulary` (the frozen codebook), `PyramidSpec` + `saq_quantize` (Streaming Average
Quantization), `Tokenizer` / `TokenPyramid`. Subpackages: `spae.data`, `spae.losses`, `spae.metrics`,
`spae.perceptual`, `spae.train`, `spae.lm`, `spae.teachers`, `spae.prompting`, `spae.assets`, `spae.demo`.
Training building blocks (networks' parts, losses, the discriminator) live in `spae.train` and `spae.losses`.
"""

from spae._codebook import CodebookConfig
from spae._images import load_image, save_image
from spae._io import SpaeInputError
from spae._nets import AutoencoderConfig
from spae._pyramid import PyramidSpec, nearest_tokens, reconstruct_from_ids, saq_quantize
from spae._tiny import tiny_config, tiny_tokenizer, tiny_vocabulary
from spae._tokenizer import Tokenizer, TokenizerConfig, TokenPyramid
from spae._vocab import Vocabulary
from spae._xla_flags import xla_convolutions_on_cpu, xla_cpu_settings
from spae import assets  # registers the built-in vocabulary specs ('default', 'gemma3-270m') in spae._specs

__all__ = [
    "SpaeInputError",
    "Vocabulary",
    "Tokenizer", "TokenizerConfig", "TokenPyramid", "AutoencoderConfig", "CodebookConfig",
    "PyramidSpec", "saq_quantize", "nearest_tokens", "reconstruct_from_ids",
    "load_image", "save_image",
    "tiny_config", "tiny_tokenizer", "tiny_vocabulary",
    "xla_cpu_settings", "xla_convolutions_on_cpu",
]

__version__ = "0.1.0"

# Subpackages are imported on first attribute access (`spae.lm`, `spae.data`, ...), so `import spae` stays light.
_SUBMODULES = ("data", "demo", "lm", "losses", "metrics", "perceptual", "prompting", "teachers", "train")


def __getattr__(name: str):
  if name in _SUBMODULES:
    import importlib

    return importlib.import_module(f"spae.{name}")
  raise AttributeError(f"module 'spae' has no attribute {name!r}")
