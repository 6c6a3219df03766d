"""eva-train."""
