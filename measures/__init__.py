"""measures: see README; filled in by its own issue."""
