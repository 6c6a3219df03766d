"""Lightning callbacks around a fit: checkpoints and the run log, plain progress lines, GRPO's
episode dumps and failure files (they read the typed step record a stage returns).

May import everything below it except the CLI.
"""
