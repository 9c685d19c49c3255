"""CI-size run: trains a few steps in seconds on in-memory shapes scenes.

  spae train --config configs/tiny.py --workdir /tmp/spae-tiny-run
"""

from spae import AutoencoderConfig, PyramidSpec, TokenizerConfig
from spae.train import DiscriminatorConfig, TrainConfig


def get_config() -> TrainConfig:
  return TrainConfig(
      tokenizer=TokenizerConfig(
          image_size=32,
          autoencoder=AutoencoderConfig(channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                                        latent_dim=32, norm_groups=8),
          pyramid=PyramidSpec((1, 2, 4, 8))),
      vocab="tiny",
      data="shapes-memory:64@32",
      batch_size=8,
      steps=6,
      lr=1e-3,
      d_lr=1e-3,
      warmup_steps=2,
      perceptual_weight=0.0,
      disc_start=3,
      discriminator=DiscriminatorConfig(channels=8, channel_multipliers=(2, 2), blur=True),
      lecam_weight=0.1,
      semantic_layers=2,
      semantic_schedule="constant",
      log_every=1,
      image_every=3,
      checkpoint_every=2,
      keep_checkpoints=2,
      num_data_threads=0,
  )
