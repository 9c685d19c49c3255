"""Paper scale: 128 px ImageNet, 16×16 latents, the default pyramid (597 tokens), for GPU/TPU hosts.

Needs ImageNet prepared as array_record tfds, a frozen LLM vocabulary saved with spae.Vocabulary.save
(e.g. Gemma's table, filtered), and a CLIP/SigLIP teacher:

  spae train --config configs/imagenet128.py --workdir runs/in128 \\
      --set vocab=/data/gemma2_vocab --set teacher=clip:/models/clip-vit-b16 \\
      --set data=tfds:imagenet2012@/data/tfds --set perceptual_weights=/models/lpips_vgg16.npz
"""

from spae import AutoencoderConfig, PyramidSpec, TokenizerConfig
from spae.train import DiscriminatorConfig, TrainConfig


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
      lr=1e-4,
      d_lr=1e-4,
      warmup_steps=5000,
      perceptual_weight=0.1,
      adversarial_weight=0.1,
      disc_start=20_000,
      r1_gamma=10.0,
      lecam_weight=0.001,
      discriminator=DiscriminatorConfig(channels=64, channel_multipliers=(2, 4, 4, 4, 4)),
      teacher="REQUIRED: --set teacher=clip:DIR",
      semantic_layers=3,
      semantic_weight=1.0,
      semantic_schedule="cosine",
      semantic_final_ratio=0.1,
      log_every=50,
      image_every=2000,
      checkpoint_every=2000,
      num_data_threads=8,
  )
