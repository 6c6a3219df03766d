"""The network and its plumbing: loading (LoRA, quantisation), the FSDP2 sharding plan, the
optimizer, collectives, throughput figures and export to a Hugging Face folder.

The ground floor of eva-train: imports eva-core, torch, transformers and peft, nothing of eva-train's.
"""
