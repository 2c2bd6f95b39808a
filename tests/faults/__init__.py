"""The fault run: the production processes under every fault of brief section 6 at once (run.py)."""
