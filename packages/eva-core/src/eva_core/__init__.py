"""eva-core."""
