"""The built-in REST executor: its address policy (addresses.py)."""
