"""Level 2: datasets in their official formats and the papers' split protocols."""
