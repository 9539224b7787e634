"""One package per job kind. Each `kinds/<kind>/__init__.py` declares the kind without importing torch: its
Params, default criterion, metric names and the Job class, whose `run` imports the computation (`run.py`)
lazily. What only that kind uses lives in its package; what several kinds share lives in the libraries beside
`kinds/` (sae/, substrate/, features/, pages/)."""
