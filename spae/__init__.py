"""spae: Semantic Pyramid AutoEncoder — images as words of a frozen LLM vocabulary, and back."""

from spae._io import SpaeInputError
from spae._nets import AutoencoderConfig, Decoder, Discriminator, DiscriminatorConfig, Encoder
from spae._pyramid import (PyramidSpec, commitment_loss, nearest_tokens, reconstruct_from_ids, rq_quantize,
                           saq_quantize, straight_through)
from spae._tokenizer import TokenizerConfig, Tokenizer, TokenPyramid
from spae._tiny import tiny_config, tiny_tokenizer, tiny_vocabulary
from spae._vocab import Vocabulary
from spae._images import load_image, save_image

__version__ = "0.1.0"
