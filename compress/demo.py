"""The demo: the best route (configs/demo.yaml) on the embedded defaults, ending with the report's path.

    xcompress demo [--dry_run]
    make demo

It copies the shipped SST-2 files into the demo's work directory (stages that write beside the task files, as
augmentation does, write there, never into data/), then runs `xcompress pipeline configs/demo.yaml` from the repository root. A rerun
skips the stages that are complete.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from stagekit.options import option

from . import pipeline

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
TASK_FILES = ("train.tsv", "dev.tsv")


@dataclasses.dataclass
class DemoConfig:
    dry_run: bool = option(False, help="check the demo pipeline and print its commands")


CONFIG = DemoConfig


def run(cfg: DemoConfig) -> dict[str, Any]:
    os.chdir(REPO)  # the demo's paths (data/, models/, runs/demo) are the repository's
    glue = Path(_demo_glue_dir())
    if not cfg.dry_run:
        (glue / "SST-2").mkdir(parents=True, exist_ok=True)
        for name in TASK_FILES:
            if not (glue / "SST-2" / name).is_file():
                shutil.copy2(REPO / "data" / "glue_data" / "SST-2" / name, glue / "SST-2" / name)
    summary = pipeline.run(pipeline.PipelineConfig(config=str(DEMO_CONFIG), dry_run=cfg.dry_run))
    if summary["report"]:
        summary["report"] = str(REPO / summary["report"])
    return summary


def _demo_glue_dir() -> str:
    import yaml

    return yaml.safe_load(DEMO_CONFIG.read_text())["vars"]["glue"]


def report(summary: dict[str, Any]) -> str:
    return pipeline.report(summary)
