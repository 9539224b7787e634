"""Analyses of SAE latents that several kinds share: which latent detects a planted category (select), a
direction's direct effect on the logits (logits), clamping latents inside a running model (intervene), sampling
under interventions (sampling), and the causal feature kinds' common parameters, set-up and control latent
(target). Modules other than target import torch; the kinds' `__init__` modules import only target.
"""
