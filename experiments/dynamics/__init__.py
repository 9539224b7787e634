"""Training-dynamics analyses: gradient decomposition and gradient leading terms."""
