"""In-context prompting of a frozen LLM with SPAE tokens: few-shot classification and progressive generation.

Prompts are template strings filled into segments (`fill`) and rendered to LM ids and readable text (`render`)
by one engine for both tasks; image tokens reach the LM through a `TokenMap`. Episodes are sampled from a
`spae.data.LabelledSource`, replayed from episode files, or read from Frozen's published mini-ImageNet files
(`read_frozen`).
"""

from spae.prompting._episodes import (NONSENSE_NAMES, Episode, FileImages, check_source, normalize_label,
                                      read_episodes, repeated_support, sample_episodes, sample_nested_episodes,
                                      split_caption, write_episodes)
from spae.prompting._frozen import FROZEN_TABLE, format_frozen_table, frozen_induction, read_frozen
from spae.prompting._probes import bag_of_tokens, jaccard, jaccard_probe, ridge_probe
from spae.prompting._prompt import PromptTemplate
from spae.prompting._render import Answer, Rendered, Segment, Text, Tokens, fill, readable, render
from spae.prompting._stats import confidence_interval, format_table, summarize
from spae.prompting._tokenmap import TokenMap, shares_vocabulary
from spae.prompting.fewshot import (FewShotConfig, episode_template, evaluate_fewshot, score_candidates,
                                    sweep_fewshot)
from spae.prompting._fewshot_cli import add_fewshot_args, run_fewshot
from spae.prompting.generate import (GenerateConfig, GenerationResult, add_generate_args, add_token_noise, corrupt,
                                     generate_pyramid, noise_schedule, run_generate, run_image_task, run_text_task,
                                     token_accuracy)

__all__ = ["NONSENSE_NAMES", "Episode", "FileImages", "check_source", "normalize_label", "read_episodes",
           "repeated_support", "sample_episodes", "sample_nested_episodes", "split_caption", "write_episodes",
           "FROZEN_TABLE", "format_frozen_table", "frozen_induction", "read_frozen", "bag_of_tokens", "jaccard",
           "jaccard_probe", "ridge_probe", "PromptTemplate", "Answer", "Rendered", "Segment", "Text", "Tokens", "fill",
           "readable", "render", "confidence_interval", "format_table", "summarize", "TokenMap", "shares_vocabulary",
           "FewShotConfig", "add_fewshot_args", "episode_template", "evaluate_fewshot", "run_fewshot",
           "score_candidates", "sweep_fewshot", "GenerateConfig", "GenerationResult", "add_generate_args",
           "add_token_noise", "corrupt", "generate_pyramid", "noise_schedule", "run_generate", "run_image_task",
           "run_text_task", "token_accuracy"]
