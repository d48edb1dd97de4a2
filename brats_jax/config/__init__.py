"""Configs: reading config files (io.py) and every rule a config must follow (checks.py)."""
