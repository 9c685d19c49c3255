"""In-context prompting of a frozen LLM with SPAE tokens: few-shot classification and progressive generation."""

from spae.prompting._episodes import (NONSENSE_NAMES, Episode, FileImages, ImageSource, check_source,
                                      normalize_label, read_episodes, repeated_support, sample_episodes,
                                      write_episodes)
from spae.prompting._probes import bag_of_tokens, jaccard, jaccard_probe, ridge_probe
from spae.prompting._prompt import PromptTemplate, TokenMap, render_ids, render_text, shares_vocabulary
from spae.prompting.fewshot import (FewShotConfig, add_fewshot_args, confidence_interval, evaluate_fewshot,
                                    format_table, run_fewshot, score_candidates, summarize)
from spae.prompting.generate import (GenerateConfig, GenerationResult, add_generate_args, add_token_noise, corrupt,
                                     generate_pyramid, noise_schedule, run_generate, run_image_task, run_text_task)
