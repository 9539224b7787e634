"""claimgraph.experiments.substrate"""
