"""CPU run (~30-60 min on 2 cores): the shipped default tokenizer for 64 px `shapes` scenes.

16×16 latents with the default pyramid (1, 2, 4, 8, 16, 16) = 597 tokens; the codebook is the shipped
all-MiniLM-L6-v2 word vocabulary (8,195 × 384) and the semantic teacher is the shipped LiT image tower.
`tools/train_default_tokenizer.py` runs exactly this config. The GAN is off here: with ~800 CPU steps it
costs PSNR without time to pay back; enable it with --set gan.adversarial_weight=0.05 --set gan.disc_start=N.

  spae train --config configs/shapes64.py --workdir runs/shapes64
"""

from spae import AutoencoderConfig, PyramidSpec, TokenizerConfig
from spae.train import (CheckpointConfig, DiscriminatorConfig, GANConfig, LoggingConfig, LossConfig, OptimConfig,
                        SemanticConfig, TrainConfig)


def get_config() -> TrainConfig:
  return TrainConfig(
      tokenizer=TokenizerConfig(
          image_size=64,
          autoencoder=AutoencoderConfig(channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                                        latent_dim=384, norm_groups=8),
          pyramid=PyramidSpec((1, 2, 4, 8, 16, 16))),
      vocab="default",
      data="shapes:~/.cache/spae/shapes",
      crop="center",
      flip=True,
      batch_size=16,
      steps=800,
      seed=0,
      num_data_threads=1,
      optim=OptimConfig(lr=1e-3, d_lr=2e-4, warmup_steps=100, final_lr_ratio=0.05, ema_decay=0.99),
      loss=LossConfig(perceptual_weight=0.0, commitment_weight=0.25),
      gan=GANConfig(adversarial_weight=0.0, disc_start=10**9,
                    discriminator=DiscriminatorConfig(channels=16, channel_multipliers=(2, 4, 4), blur=False)),
      semantic=SemanticConfig(teacher="default", layers=3, weight=0.02, decay=0.5, schedule="cosine",
                              final_ratio=0.2, tau=0.25, teacher_top_k=10, teacher_temperature=0.05),
      logging=LoggingConfig(every=25, image_every=250),
      checkpoints=CheckpointConfig(every=100),
  )
