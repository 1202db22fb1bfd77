"""The pipeline runner on real stages: pregenerate, decompose and a 2-rank torchrun general distillation chained
by references; a failing stage reported with exit 1; a rerun resumes (complete stages skipped, a changed stage
rerun over its own output); bad configs refused with file and line before anything runs."""
import json

import pytest
import yaml

from stagekit.cli import main
from tests.conftest import REPO, run_cli

TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"


def _pipeline(work, gd_steps, with_failing_stage):
    stages = [
        {"stage": "pregenerate", "args": {"train_corpus": str(TINY), "bert_model": "${vars.teacher}",
                                          "do_lower_case": True, "epochs_to_generate": 1, "max_seq_len": 64,
                                          "quiet": True}},
        {"stage": "decompose", "id": "td", "args": {"teacher_model": "${vars.teacher}",
                                                    "config": str(REPO / "models/minilm-td-20-112")}},
        {"stage": "general-distill", "launcher": "torchrun:2",
         "args": {"teacher_model": "${vars.teacher}", "student_model": "${td.output_dir}",
                  "pregenerated_data": "${pregenerate.output_dir}", "train_batch_size": 8, "max_steps": gd_steps,
                  "log_steps": 2, "quiet": True}},
    ]
    if with_failing_stage:  # a TD encoder without a classifier: evaluate refuses it (exit 2)
        stages.append({"stage": "evaluate", "args": {"model": "${general-distill.output_dir}", "task_name": "SST-2",
                                                     "data_dir": str(REPO / "data/glue_data")}})
    return {"work_dir": str(work), "vars": {"teacher": "all-MiniLM-L6-v2"}, "stages": stages}


@pytest.mark.slow
def test_pipeline_runs_reports_failure_and_resumes(tmp_path):
    work, config = tmp_path / "work", tmp_path / "pipe.yaml"
    config.write_text(yaml.safe_dump(_pipeline(work, 4, True), sort_keys=False))
    r = run_cli("pipeline", str(config))
    assert r.returncode == 1, r.stderr[-6000:]
    assert "stage evaluate (evaluate) failed with exit status 2" in r.stderr
    assert "not fine-tuned on SST-2" in r.stderr  # the stage's own message is shown too
    done = {p.name for p in (work / ".pipeline").glob("*.done.json")}
    assert done == {"pregenerate.done.json", "td.done.json", "general-distill.done.json"}
    summary = json.loads((work / "general-distill/general_distill_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    resolved = yaml.safe_load((work / "pipeline_resolved.yaml").read_text())
    gd = next(s for s in resolved["stages"] if s["id"] == "general-distill")
    assert gd["student_model"] == str(work / "td") and gd["depends_on"] == ["pregenerate", "td"]

    # Fixed (the failing stage dropped) and changed (more steps): only the changed stage runs again.
    config.write_text(yaml.safe_dump(_pipeline(work, 6, False), sort_keys=False))
    r = run_cli("pipeline", str(config))
    assert r.returncode == 0, [line for line in r.stderr.splitlines() if "error" in line]
    assert "pregenerate (pregenerate, local): complete, skipped" in r.stdout
    assert "td (decompose, local): complete, skipped" in r.stdout
    assert "--overwrite_output_dir" in r.stdout  # its own earlier output, replaced on purpose
    assert json.loads((work / "general-distill/general_distill_summary.json").read_text())["steps"] == 6
    r = run_cli("pipeline", str(config))
    assert r.returncode == 0 and r.stdout.count("complete, skipped") == 3
    assert "0 stage(s) ran, 3 complete and skipped" in r.stdout


BAD = {
    "unknown_stage": ("stages:\n  - stage: distil\n", ":3: unknown stage 'distil'"),
    "unknown_key": ("stages:\n  - stage: decompose\n    args:\n      teacher_model: x\n      rank: 3\n",
                    ":6: stage decompose has no key 'rank'"),
    "stage_level_key": ("stages:\n  - stage: decompose\n    teacher_model: x\n", ":4: unknown key 'teacher_model'"),
    "forward_reference": ("stages:\n  - stage: decompose\n    args:\n      teacher_model: ${gd.output_dir}\n",
                          ":5: ${gd.output_dir} refers to no earlier stage"),
    "missing_output_key": ("stages:\n  - stage: decompose\n    id: td\n    args: {teacher_model: all-MiniLM-L6-v2}\n"
                           "  - stage: evaluate\n    args: {model: '${td.model_dir}', task_name: SST-2, data_dir: d}\n",
                           "${td.model_dir}: td has no model_dir"),
    "launcher_for_one_process": ("stages:\n  - stage: decompose\n    launcher: torchrun:2\n    args: {teacher_model: x}\n",
                                 ":4: stage decompose runs on one process"),
    "bad_value": ("stages:\n  - stage: general-distill\n    args: {teacher_model: x, student_model: y, "
                  "pregenerated_data: z, max_steps: many}\n", "--max_steps: invalid int value: 'many'"),
    "missing_required": ("stages:\n  - stage: decompose\n", "the following arguments are required: --teacher_model"),
    "not_yaml": ("stages: [\n", "not valid YAML"),
    "prune_amount": ("stages:\n  - stage: prune\n    args: {model: m, task_name: SST-2, data_dir: d, "
                     "pruning_type: unstructured, amount: 1.5}\n", ":3: stage prune: setting "),
    "quantize_twice": ("stages:\n  - stage: quantize\n    id: q\n    args: {model: m}\n  - stage: quantize\n"
                       "    args: {model: '${q.output_dir}'}\n", "quantizes the output of a quantize stage"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pipeline_config_is_refused_before_any_stage(case, tmp_path, capsys):
    text, message = BAD[case]
    config = tmp_path / "bad.yaml"
    config.write_text(f"work_dir: {tmp_path / 'work'}\n{text}")
    status = main(["pipeline", str(config)])
    err = capsys.readouterr().err
    assert status == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and str(config) in err
    assert not (tmp_path / "work").exists()


def test_shipped_configs_are_valid(capsys):
    for config in sorted((REPO / "configs").glob("*.yaml")):
        assert main(["pipeline", str(config), "--dry_run"]) == 0, (config.name, capsys.readouterr().err)
        assert "stages checked (dry run, nothing ran)" in capsys.readouterr().out
