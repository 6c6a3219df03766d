"""The short help of `eva-train fit` and `eva-train validate`, written without torch or Lightning.

LightningCLI builds its help from the classes, which means importing Lightning (and through it
torch, torchmetrics and torchvision): 17 s of CPU for `eva-train fit --help` (measured with
`python -X importtime -c "import lightning"`: torchmetrics pulls in torchvision and
`torch._dynamo`, so no import can be dropped cheaply). The short help says what the subcommand
does, the options every run uses, and the recipes shipped in `configs/` (read from the folder when
asked, grouped by the stage module each names); `--help-all`, or `--help` after a `--config`,
still reaches LightningCLI's full option list. LightningCLI remains the one parser of real runs.
"""

from __future__ import annotations

import re
from pathlib import Path

STAGE_ORDER = ("sft", "kto", "grpo")  # the pipeline's order (docs/train.md)
_MODEL_CLASS = re.compile(r"^model:\s*\n\s+class_path:\s*([\w.]+)", re.MULTILINE)

WHAT = {
    "fit": "Train the stage module a config names on its data module (LightningCLI: the config file, then\n"
           "overrides on the command line).",
    "validate": "The validation loss of a checkpoint under a config (LightningCLI, as `fit` parses it).",
}

OPTIONS = """\
options:
  -c, --config FILE       a recipe (YAML); repeatable, later files override earlier ones
  --ckpt_path CKPT        fit: resume a killed run from its checkpoint (the run's own folder keeps
                          logging), e.g. runs/sft-tiny/version_0/checkpoints/last.ckpt;
                          validate: the checkpoint to evaluate
  --trainer.KEY VALUE     override a Trainer argument, e.g. --trainer.max_steps 10
  --model.init_args.KEY VALUE
                          override the stage module's argument, e.g. --model.init_args.optim.lr 1e-5
  --data.init_args.KEY VALUE
                          override the data module's argument, e.g. --data.init_args.batch_size 4
  --print_config          print the resolved config and exit (nothing is trained)
  -h, --help              this help; with a --config before it, Lightning's full option list
  --help-all              Lightning's full generated option list (imports Lightning: seconds)
"""


def configs_dir(cwd: Path | None = None) -> Path | None:
    """The recipes' folder: `configs/` under the working directory (where the README runs from),
    else the one of the source tree this package is installed from; None when neither exists."""
    for folder in ((cwd or Path.cwd()) / "configs", Path(__file__).resolve().parents[4] / "configs"):
        if folder.is_dir():
            return folder
    return None


def config_stages(folder: Path) -> dict[str, list[str]]:
    """The YAML files of `folder` by the stage module their `model.class_path` names
    (`eva_train.stages.sft.SFTModule` -> "sft"), stages in the pipeline's order, files sorted;
    a file naming no `eva_train` module is listed under "other"."""
    stages: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        found = _MODEL_CLASS.search(path.read_text(encoding="utf-8", errors="replace"))
        parts = found.group(1).split(".") if found else []
        stage = parts[2] if len(parts) == 4 and parts[:2] == ["eva_train", "stages"] else "other"
        stages.setdefault(stage, []).append(path.name)
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return dict(sorted(stages.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def usage(subcommand: str = "fit", cwd: Path | None = None) -> str:
    """The short help of `eva-train SUBCOMMAND` ("fit" or "validate")."""
    lines = [f"usage: eva-train {subcommand} --config FILE [--config FILE ...] [--ckpt_path CKPT] [--KEY VALUE ...]",
             "", WHAT[subcommand], "", OPTIONS]
    folder = configs_dir(cwd)
    if folder is None:
        lines.append("recipes: no configs/ folder here (the repository's configs/ holds them)")
    else:
        shown = folder.relative_to(cwd or Path.cwd()) if folder.is_relative_to(cwd or Path.cwd()) else folder
        lines.append(f"recipes in {shown}/ (each opens with what it trains and the command that runs it):")
        for stage, names in config_stages(folder).items():
            lines.append(f"  {stage + ':':6}{' '.join(names)}")
    lines += ["", "example:",
              f"  eva-train {subcommand} --config configs/sft-tiny.yaml"
              + (" --trainer.max_steps 10" if subcommand == "fit" else
                 " --ckpt_path runs/sft-tiny/version_0/checkpoints/last.ckpt"), ""]
    return "\n".join(lines)


def wants_short_help(args: list[str]) -> bool:
    """Whether `eva-train fit ARGS` asks for the short help: `-h`/`--help` with no config before it
    (after a config, `--help` shows that config's values in Lightning's full list) and no `--help-all`."""
    for arg in args:
        if arg in ("-h", "--help"):
            return True
        if arg in ("-c", "--config", "--help-all") or arg.startswith("--config="):
            return False
    return False
