"""Package data: split lists of public datasets (plain CSV)."""
