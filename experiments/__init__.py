"""claimgraph.experiments"""
