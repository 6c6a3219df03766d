"""eva-train: the three training stages of an EVA-style video agent (SFT, KTO, multi-turn GRPO)
as Lightning modules, with FSDP2 and LoRA/QLoRA.

Folders by role, from the ground up (each imports only the ones before it; docs/architecture.md):

    model/       loading, LoRA, sharding, optimizer, collectives, export
    encoding/    conversations and episodes -> token batches
    data/        sources, shards, resumable loaders, data modules, the GRPO curriculum
    objectives/  log-probs, losses, the reference policy
    rl/          rollouts, rewards of a step, advantages
    stages/      SFTModule, KTOModule, GRPOModule on one base
    callbacks/   checkpoints, progress, episode dumps, failure files
    cli/         `eva-train`
"""
