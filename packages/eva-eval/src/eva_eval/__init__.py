"""eva-eval."""
