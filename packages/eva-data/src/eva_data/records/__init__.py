"""Training records for the three stages (SFT, KTO, RL), their JSON schema, the conversion of
an agent episode into a training conversation, and the oracle writer for synthetic items."""
