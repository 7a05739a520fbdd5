"""Example third-party plugin for fairbench."""
