"""Feature analysis on SAE latents: SAEs provisioned once per (model, data, hook, recipe, seed), latents
matched to planted categories, direct logit effects, ablation, pinned sampling, emergence and feature pages.
Imports torch; job modules import it inside `run` only."""
