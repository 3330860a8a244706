"""Per-split writers that assemble the processed records into the output formats."""
