"""`eva-train`: the command line. `fit` and `validate` through LightningCLI, plus `export` and `precompute-ref`.

    eva-train fit --config configs/sft-tiny.yaml [--trainer.max_steps 20 ...]
    eva-train validate --config configs/sft-tiny.yaml --ckpt_path runs/.../last.ckpt
    eva-train export CKPT --out DIR [--adapter-only] [--dtype bfloat16]
    eva-train precompute-ref --config configs/kto-tiny.yaml --out FILE [fit overrides ...]

Configs name the stage module and the data module by class path (`model.class_path`,
`data.class_path`), so one entry point runs every stage. They are parsed in jsonargparse's
"omegaconf" mode: `${...}` interpolations resolve within the config file (for example
`data.init_args.processor_path: ${model.init_args.model.path}`), and `${tiny_model:0}` names
the tiny offline model's folder. The logger defaults to CSV
under `runs/`; the resolved config is written beside the checkpoints (`config.yaml` in the
run folder).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # lightning is imported when a subcommand runs: `--help` answers at once
    from lightning.pytorch.cli import LightningCLI


def register_resolvers() -> None:
    """OmegaConf resolvers the recipes use: `${tiny_model:SEED}` (or `${tiny_model:SEED,SIZE}`, a
    size of `eva_core.tiny_model.SPECS`) is the tiny offline Qwen2.5-VL's folder
    (`eva_core.tiny_model.tiny_model_dir`, built into the user cache on first use)."""
    from omegaconf import OmegaConf

    def tiny_model(seed: int = 0, size: str = "tiny") -> str:
        from eva_core.tiny_model import tiny_model_dir

        return str(tiny_model_dir(seed=int(seed), spec=str(size)))

    OmegaConf.register_resolver("tiny_model", tiny_model, replace=True, use_cache=True)


TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
    "log_every_n_steps": 1,
}


def fit_cli(args: Sequence[str] | None = None, *, run: bool = True) -> LightningCLI:
    """The LightningCLI for `fit`/`validate` (and `test`/`predict`, which the stages do not define)."""
    import lightning as L
    from lightning.pytorch.cli import LightningCLI

    from eva_train.callbacks.checkpoint import FinalCheckpoint, RunLog, checkpoint_log_version
    from eva_train.callbacks.progress import PlainProgress

    class EvaCLI(LightningCLI):
        def before_instantiate_classes(self) -> None:
            """`fit --ckpt_path` continues the checkpoint's logger version (`eva_train.callbacks.checkpoint.RunLog`)."""
            config = self.config.get(self.subcommand) if self.subcommand else self.config
            if self.subcommand != "fit" or not config or not config.get("ckpt_path"):
                return
            logger = config.trainer.get("logger", {})
            init_args = logger.get("init_args") if hasattr(logger, "get") else None
            if init_args is not None and "version" in init_args and init_args.version is None:
                init_args.version = checkpoint_log_version(config.ckpt_path)
            if init_args is not None and init_args.get("version") is not None \
                    and str(logger.get("class_path", "")).endswith("CSVLogger"):
                version = init_args.version
                run_log.keep_earlier_rows(Path(init_args.save_dir) / (init_args.get("name") or "lightning_logs")
                                          / (f"version_{version}" if isinstance(version, int) else str(version)))

    # Lightning warns that a mid-epoch resume has no resumable loader because it looks for the
    # position in its loop state; ours travels in the data module's (`eva_train.data.datamodules`).
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    run_log = RunLog()
    register_resolvers()
    return EvaCLI(
        model_class=L.LightningModule,
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        # Callbacks given here are added to the config's: every fit ends with `last.ckpt` at its
        # final step, a resumed fit logs into its run's folder (`eva_train.callbacks.checkpoint`), and a
        # run whose stderr is not a terminal prints plain progress lines (`eva_train.callbacks.progress`).
        trainer_defaults=TRAINER_DEFAULTS | {"callbacks": [FinalCheckpoint(), run_log, PlainProgress()]},
        # The config given is the run's truth; a resumed run must not take its model arguments
        # from the checkpoint's hyperparameters (which export reads, as plain dicts).
        load_from_checkpoint_support=False,
        args=list(args) if args is not None else None,
        run=run,
    )


def export_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="eva-train export",
                                     description="Write a Hugging Face model folder from an eva-train checkpoint.")
    parser.add_argument("ckpt", help="a .ckpt file or an FSDP2 distributed checkpoint folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--adapter-only", action="store_true", help="write the LoRA adapter, not a merged model")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weight dtype of a merged model (default: the base model's)")
    ns = parser.parse_args(list(argv))
    from eva_train.model.export import ExportError, export_checkpoint

    try:
        out = export_checkpoint(ns.ckpt, ns.out, adapter_only=ns.adapter_only, dtype=ns.dtype)
    except ExportError as err:
        parser.exit(2, f"eva-train export: error: {err}\n")
    print(out)
    return 0


def precompute_ref_main(argv: Sequence[str]) -> int:
    """Reference log-probs of the run a `fit` config describes (`eva_train.objectives.precompute`), as JSON."""
    parser = argparse.ArgumentParser(prog="eva-train precompute-ref",
                                     description="Precompute a KTO run's reference log-probs (rows and KL pairs).")
    parser.add_argument("--out", required=True, help="JSON file to write (then train with "
                        "--model.init_args.reference.kind precomputed --model.init_args.reference.path FILE)")
    ns, fit_args = parser.parse_known_args(list(argv))
    import torch

    from eva_train.model.loading import load_model
    from eva_train.objectives.precompute import precompute_reference
    from eva_train.objectives.reference import ModelReference, write_table

    cli = fit_cli(["fit", *fit_args], run=False)
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    world = trainer.num_devices * trainer.num_nodes
    data.prepare_data()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reference = ModelReference(load_model(module.model_spec, None).requires_grad_(False).eval().to(device))
    with torch.no_grad():
        streams = [data.stream(data.train_source, shuffle=True, rank=r, world_size=world) for r in range(world)]
        table = precompute_reference(reference, streams, epochs=int(trainer.max_epochs or 1), device=device)
        if data.val_source is not None:
            val = [data.stream(data.val_source, shuffle=False, rank=r, world_size=world) for r in range(world)]
            table |= precompute_reference(reference, val, epochs=1, device=device)
    out = write_table(table, ns.out, meta={"model": module.model_spec.path, "world_size": world,
                                           "epochs": int(trainer.max_epochs or 1)})
    print(f"wrote {len(table)} reference log-probs to {out}")
    return 0


USAGE = """usage: eva-train {fit,validate,export,precompute-ref} ...

Train, validate and export eva's stage modules.

subcommands:
  fit        train from a config:       eva-train fit --config configs/sft-tiny.yaml
             resume a killed run:       ... --ckpt_path runs/NAME/version_N/checkpoints/last.ckpt
  validate   validation loss of a checkpoint: eva-train validate --config C --ckpt_path CKPT
  export     a Hugging Face model folder: eva-train export CKPT --out DIR [--adapter-only]
  precompute-ref  a KTO run's reference log-probs: eva-train precompute-ref --out FILE --config C

`eva-train SUBCOMMAND --help` lists a subcommand's options; `eva-train fit --help-all` lists every
option of Lightning's (it loads Lightning).
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):  # answered without importing Lightning or torch
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "export":
        return export_main(args[1:])
    if args[0] == "precompute-ref":
        return precompute_ref_main(args[1:])
    if args[0] in ("fit", "validate"):
        from eva_train.cli.usage import usage, wants_short_help

        if wants_short_help(args[1:]):  # LightningCLI's own help imports Lightning: 17 s of CPU (cli/usage.py)
            print(usage(args[0]), end="")
            return 0
        if "--help-all" in args:  # Lightning's generated list: its `--help`, given as args instead of argv's
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within")
            argv = [("--help" if arg == "--help-all" else arg) for arg in args]
    fit_cli(argv)  # None: LightningCLI reads sys.argv itself
    return 0


if __name__ == "__main__":
    sys.exit(main())
