"""The synthetic needle-in-video benchmark: seeded plans, rendered H.264 videos, questions with
known answers and evidence windows, written as a unified-format benchmark folder."""
