"""claimgraph.experiments.sae"""
