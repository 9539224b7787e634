#!/usr/bin/env bash
# The main job: install into ./.venv, then go from the bundled paper documents to claims with evidence.
#   1. ingest data/papers (a claim page, two novelty reports, a summary, hand-written YAML and JSON)
#   2. print the claim table, the seed claim's page (before any run) and the similarity suggestions
#   3. register an experiment for each testable claim or finding, each with its criterion fixed now
#      (data/experiments.yaml, in one transaction)
#   4. run them (CPU: toy models trained here on the synthetic corpus, and lm:smollm2-135m on text:mixed; cached
#      after the first time)
#   5. print each tested claim's evidence and status, and the claim page of the seed claim
# Re-running is cheap: ingest is a no-op, experiments already registered are found, runs come from the cache.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
mkdir -p out
export CLAIMGRAPH_DB="${CLAIMGRAPH_DB:-$ROOT/out/claimgraph.duckdb}"
export CLAIMGRAPH_CACHE="${CLAIMGRAPH_CACHE:-$ROOT/out/cache}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
START=$SECONDS
step() { printf '\n\033[1m== %s\033[0m  (%d s since the start)\n' "$*" "$((SECONDS - START))" >&2; }

step "1. ingest the bundled documents"
claimgraph init
claimgraph ingest data/papers

# Claims and findings from data/papers that experiments test
CP=claim:learned-features-reflect-the-functionality-of-the-model-and-not-just-the-data-distribution-as-evidenced-by-interpretable-downstream-effects-not-used-in-dictionary-learning
F_SHUFFLED=finding:dictionary-learning-on-model-with-randomly-shuffled-weights-produces-mainly-single-token-and-poorly-interpretable-features
F_BASE64=finding:causal-validation-of-base64-feature-function-via-pinned-feature-sampling
F_ARABIC=finding:causal-validation-that-the-arabic-feature-has-the-predicted-downstream-effect-on-generation
C_THRESHOLDS=claim:interpretable-features-in-large-language-models-appear-once-specific-thresholds-of-training-time-layer-depth-and-model-scale-are-crossed
F_THRESHOLDS=finding:results-show-clear-thresholds-in-time-and-scale-at-which-features-emerge-across-several-domains
C_REEMERGE=claim:features-first-seen-in-early-layers-can-unexpectedly-appear-again-in-later-layers-which-challenges-the-usual-picture-of-representational-dynamics
C_DECOMP=claim:decomposition-of-gradient-signal-into-direct-learning-pre-caching-and-circuit-sharing
C_INFLUENCE=claim:method-to-estimate-influence-of-gradient-components-on-feature-development
C_INTERVENE=claim:framework-connecting-interventions-to-gradient-influence-ratios
C_CLOSED=claim:closed-form-weight-characterizations-via-gradient-leading-terms
C_BASES=claim:three-basis-functions-for-semantic-associations
C_VALIDATION=claim:empirical-validation-on-self-attention-models-and-practical-llms

step "2. claims, the seed claim's page, and entries that look related but have no typed edge"
claimgraph list --type claim
claimgraph show "$CP"  # the first useful screen: before any experiment runs
claimgraph suggest --limit 12

step "3. register experiments (criteria fixed before any run)"
# data/experiments.yaml: one entry per experiment (kind, claims, model, data, seeds, parameters, criterion), all
# registered in one transaction; the pre-registrations behind them are in docs/preregistration/
claimgraph experiment add --file data/experiments.yaml >/dev/null
claimgraph experiment list

step "4. run them (the first run trains the toy models: several minutes on 2 cores)"
# two at a time: the experiments grouped by model (a group shares its model's caches and runs one after another,
# each run computing in its own worker), the largest group first, the next group starting as one ends; a failed
# run does not stop the rest, and the job exits non-zero at the end
failed=0
claimgraph run --all --jobs "${CLAIMGRAPH_JOBS:-2}" || failed=$?

step "5. evidence and status"
# one process for all twelve (each process costs a second of start-up)
claimgraph evidence "$CP" "$F_SHUFFLED" "$F_BASE64" "$F_ARABIC" "$C_THRESHOLDS" "$C_REEMERGE" "$C_DECOMP" "$C_INFLUENCE" \
  "$C_INTERVENE" "$C_CLOSED" "$C_BASES" "$C_VALIDATION"
claimgraph list --type claim
claimgraph show "$CP"
step "done in $((SECONDS - START)) s; store: $CLAIMGRAPH_DB, run folders beside it"
exit "$failed"
