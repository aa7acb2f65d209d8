"""Per-agent training datasets built from debate records (no ground truth)."""
