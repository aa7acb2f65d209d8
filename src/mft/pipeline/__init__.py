"""The iteration loop and the run directory."""
