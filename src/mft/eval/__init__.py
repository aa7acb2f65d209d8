"""Accuracy with standard errors, and (later) diversity metrics."""
