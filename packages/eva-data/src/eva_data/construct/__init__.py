"""The data-construction pipeline of the EVA paper: teacher runs, the experience bank, judges, and
the builders of EVA-SFT, EVA-KTO and EVA-RL (see docs/data.md)."""
