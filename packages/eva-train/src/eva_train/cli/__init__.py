"""The `eva-train` command: `fit`, `validate`, `export`, `precompute-reference` (main) and the
short help (usage). The top floor: nothing imports it.
"""
