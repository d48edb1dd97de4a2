"""Configs.

  checks.py  every rule a config must follow, each choice from the module that implements it
  io.py      reading config files
"""
