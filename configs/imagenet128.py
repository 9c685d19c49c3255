"""Paper scale: 128 px ImageNet, 16×16 latents, the default pyramid (597 tokens), for GPU/TPU hosts.

Needs ImageNet prepared as array_record tfds, a frozen LLM vocabulary saved with spae.Vocabulary.save
(e.g. Gemma's table, filtered), and a CLIP/SigLIP teacher:

  spae train --config configs/imagenet128.py --workdir runs/in128 \\
      --set vocab=/data/gemma2_vocab --set semantic.teacher=clip:/models/clip-vit-b16 \\
      --set data=tfds:imagenet2012@/data/tfds --set loss.perceptual_weights=/models/lpips_vgg16.npz
"""

from spae import AutoencoderConfig, PyramidSpec, TokenizerConfig
from spae.train import (CheckpointConfig, DiscriminatorConfig, GANConfig, LoggingConfig, LossConfig, OptimConfig,
                        SemanticConfig, TrainConfig)


def get_config() -> TrainConfig:
  return TrainConfig(
      tokenizer=TokenizerConfig(
          image_size=128,
          # latent_dim follows the vocabulary's dimension at run time.
          autoencoder=AutoencoderConfig(channels=128, channel_multipliers=(1, 2, 2, 4), num_res_blocks=2),
          pyramid=PyramidSpec((1, 2, 4, 8, 16, 16))),
      vocab="REQUIRED: --set vocab=DIR",
      data="tfds:imagenet2012@~/tensorflow_datasets",
      crop="random",
      batch_size=256,
      steps=200_000,
      num_data_threads=8,
      optim=OptimConfig(lr=1e-4, d_lr=1e-4, warmup_steps=5000),
      loss=LossConfig(perceptual_weight=0.1),
      gan=GANConfig(adversarial_weight=0.1, disc_start=20_000, r1_gamma=10.0, lecam_weight=0.001,
                    discriminator=DiscriminatorConfig(channels=64, channel_multipliers=(2, 4, 4, 4, 4))),
      semantic=SemanticConfig(teacher="REQUIRED: --set semantic.teacher=clip:DIR", layers=3, weight=1.0,
                              schedule="cosine", final_ratio=0.1),
      logging=LoggingConfig(every=50, image_every=2000),
      checkpoints=CheckpointConfig(every=2000),
  )
