"""GRPO's online half: rollouts with the frame tool in the loop, their scores and group-relative
advantages, the typed step record callbacks receive.

May import every folder below it: model, encoding, data, objectives.
"""
