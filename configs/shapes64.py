"""CPU run (~30-60 min on 2 cores): a usable tokenizer for 64 px `shapes` scenes.

16×16 latents with the default pyramid (1, 2, 4, 8, 16, 16) = 597 tokens.

  spae train --config configs/shapes64.py --workdir runs/shapes64
  spae train --config configs/shapes64.py --workdir runs/shapes64 --set vocab=PATH/TO/VOCAB --set teacher=clip:PATH
"""

from spae import AutoencoderConfig, DiscriminatorConfig, PyramidSpec, TokenizerConfig
from spae.train import TrainConfig


def get_config() -> TrainConfig:
  return TrainConfig(
      tokenizer=TokenizerConfig(
          image_size=64,
          autoencoder=AutoencoderConfig(channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                                        latent_dim=32, norm_groups=8),
          pyramid=PyramidSpec((1, 2, 4, 8, 16, 16))),
      vocab="tiny",
      data="shapes:~/.cache/spae/shapes",
      crop="center",
      flip=True,
      batch_size=16,
      steps=3000,
      lr=5e-4,
      d_lr=2e-4,
      warmup_steps=200,
      perceptual_weight=0.0,
      adversarial_weight=0.05,
      disc_start=2000,
      discriminator=DiscriminatorConfig(channels=16, channel_multipliers=(2, 4, 4), blur=False),
      semantic_layers=3,
      semantic_weight=0.5,
      log_every=25,
      image_every=500,
      checkpoint_every=250,
  )
