"""spae: Semantic Pyramid AutoEncoder — images as words of a frozen LLM vocabulary, and back."""

from spae._io import SpaeInputError
from spae._nets import AutoencoderConfig, Decoder, Discriminator, DiscriminatorConfig, Encoder
from spae._pyramid import (PyramidSpec, commitment_loss, nearest_tokens, reconstruct_from_ids, rq_quantize,
                           saq_quantize, straight_through)
from spae._vocab import Vocabulary

__version__ = "0.1.0"
