"""CI-size run: trains a few steps in seconds on in-memory shapes scenes.

  spae train --config configs/tiny.py --workdir /tmp/spae-tiny-run
"""

from spae import AutoencoderConfig, PyramidSpec, TokenizerConfig
from spae.train import (CheckpointConfig, DiscriminatorConfig, GANConfig, LoggingConfig, LossConfig, OptimConfig,
                        SemanticConfig, TrainConfig)


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
      num_data_threads=0,
      optim=OptimConfig(lr=1e-3, d_lr=1e-3, warmup_steps=2),
      loss=LossConfig(perceptual_weight=0.0),
      gan=GANConfig(disc_start=3, lecam_weight=0.1,
                    discriminator=DiscriminatorConfig(channels=8, channel_multipliers=(2, 2), blur=True)),
      semantic=SemanticConfig(layers=2, schedule="constant"),
      logging=LoggingConfig(every=1, image_every=3),
      checkpoints=CheckpointConfig(every=2, keep=2),
  )
