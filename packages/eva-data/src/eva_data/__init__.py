"""eva-data."""
