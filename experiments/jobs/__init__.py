"""claimgraph.experiments.jobs"""
