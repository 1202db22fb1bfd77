"""stagekit on its own: atomic outputs (also when the process dies mid-publish), the output-directory checks, options
declared once (dashes, TinyBERT's prefix abbreviations, value checks), and operating-system errors as one line."""
from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stagekit.atomic import atomic_output_dir, check_output_dir, partial_dir, publish_dir
from stagekit.cli import build_parser, main
from stagekit.errors import InputError
from stagekit.options import config_from_namespace
from stagekit.stages import STAGES

from .conftest import REPO


def _dir(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


def _die_during_publish(tmp: Path, out: Path, where: str, exchange: bool) -> int:
    """publish_dir in a child process that is killed (os._exit, no cleanup) at `where`: after the first rename
    ("rename") or just before the old output is deleted ("rmtree")."""
    code = textwrap.dedent(f"""
        import os, shutil
        from pathlib import Path
        from stagekit import atomic
        if not {exchange}:
            atomic._exchange = lambda a, b: False
        if {where!r} == "rename":
            real = Path.rename
            def rename(self, target):
                real(self, target)
                os._exit(9)
            Path.rename = rename
        else:
            shutil.rmtree = lambda *a, **k: os._exit(9)
        atomic.publish_dir(Path({str(tmp)!r}), Path({str(out)!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode


def test_publish_swaps_in_one_step_and_a_death_loses_nothing(tmp_path):
    new = _dir(tmp_path / ".out.tmp-1", {"model": "new"})
    out = _dir(tmp_path / "out", {"model": "old"})
    assert _die_during_publish(new, out, "rmtree", exchange=True) == 9
    assert _contents(out) == {"model": "new"}  # the swap is one step: the user's name holds the new output
    assert _contents(new) == {"model": "old"}  # and the old one is still whole, about to be deleted


def test_publish_without_exchange_keeps_the_old_output_between_renames(tmp_path):
    new = _dir(tmp_path / ".out.tmp-1", {"model": "new"})
    out = _dir(tmp_path / "out", {"model": "old"})
    assert _die_during_publish(new, out, "rename", exchange=False) == 9
    old = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert len(old) == 1 and _contents(old[0]) == {"model": "old"} and _contents(new) == {"model": "new"}


def test_publish_replaces_and_leaves_nothing_else(tmp_path):
    out = _dir(tmp_path / "out", {"a": "old", "stale": "x"})
    publish_dir(_dir(tmp_path / ".out.tmp-1", {"a": "new"}), out)
    assert _contents(out) == {"a": "new"} and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_output_dir_leaves_nothing_when_the_body_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "half").write_text("written")
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "missing", overwrite=False) == tmp_path / "missing"  # created later, whole
    assert check_output_dir(_dir(tmp_path / "empty", {}), overwrite=False) == tmp_path / "empty"
    full = _dir(tmp_path / "full", {"keep": "mine"})
    with pytest.raises(InputError, match=r"--output_dir .*full: directory exists and is not empty"):
        check_output_dir(full, overwrite=False)
    assert check_output_dir(full, overwrite=True) == full and _contents(full) == {"keep": "mine"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file", overwrite=False)
    assert partial_dir(tmp_path / "run") == tmp_path / ".run.partial"


def _config(argv: list[str]):
    from stagekit.cli import stage_module

    return config_from_namespace(stage_module(argv[0]).CONFIG, build_parser(argv[0]).parse_args(argv))


def test_dashes_and_prefixes_as_tinybert_users_type_them():
    cfg = _config(["decompose", "--teacher-model", "t", "--output", "o", "--rank_l", "12", "--rank-dim=64",
                   "--overwrite"])
    assert (cfg.teacher_model, cfg.output_dir, cfg.rank_layer, cfg.rank_dim, cfg.overwrite_output_dir) == \
        ("t", "o", 12, 64, True)
    # The paper's task-distillation command line, abbreviations included.
    cfg = _config(["task-distill", "--teacher_model", "t", "--student_model", "s", "--data_dir", "d", "--task_name",
                   "SST-2", "--output", "out", "--do_lower_case", "--aug_train", "--pred_distill",
                   "--learning_rate", "3e-5", "--num_train_epochs", "3", "--eval_step", "100", "--max_seq_length", "64",
                   "--train_batch_size", "32"])
    assert (cfg.output_dir, cfg.phases, cfg.eval_step) == ("out", ["prediction"], 100)


# TinyBERT's README, its five command lines as written (`python general_distill.py` is `python -m distill.general`,
# which runs `xcompress general-distill`), and the paper README's demo line.
TINYBERT_README = {
    "pregenerate": "--train_corpus wiki.txt --bert_model bert --reduce_memory --do_lower_case --epochs_to_generate 3 "
                   "--output_dir json",
    "general-distill": "--pregenerated_data json --teacher_model bert --student_model tiny --reduce_memory "
                       "--do_lower_case --train_batch_size 256 --output_dir general",
    "augment": "--pretrained_bert_model bert --glove_embs glove.txt --glue_dir glue --task_name SST-2",
    "task-distill": "--teacher_model ft --student_model general --data_dir glue/SST-2 --task_name SST-2 --output_dir tmp "
                    "--max_seq_length 128 --train_batch_size 32 --num_train_epochs 10 --aug_train --do_lower_case",
}
TINYBERT_PRED = ("--pred_distill --teacher_model ft --student_model tmp --data_dir glue/SST-2 --task_name SST-2 "
                 "--output_dir tiny --aug_train --do_lower_case --learning_rate 3e-5 --num_train_epochs 3 --eval_step 100 "
                 "--max_seq_length 128 --train_batch_size 32")
PAPER_DEMO = "--teacher_model ft --student_model td --data_dir glue --task_name SST-2 --output output_demo --do_lower_case"


def test_the_tinybert_and_paper_command_lines_parse():
    parsed = {stage: _config([stage, *line.split()]) for stage, line in TINYBERT_README.items()}
    assert parsed["pregenerate"].reduce_memory and parsed["pregenerate"].epochs_to_generate == 3
    assert parsed["general-distill"].train_batch_size == 256 and parsed["general-distill"].output_dir == "general"
    assert parsed["augment"].glove_embs == "glove.txt"
    assert parsed["task-distill"].num_train_epochs == 10 and parsed["task-distill"].phases == ["intermediate"]
    assert _config(["task-distill", *TINYBERT_PRED.split()]).phases == ["prediction"]
    assert _config(["task-distill", *PAPER_DEMO.split()]).output_dir == "output_demo"


def test_a_truly_ambiguous_prefix_and_a_bad_value_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["decompose", "--teacher_model", "t", "--output_dir", "o", "--rank", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "ambiguous option: --rank could match --rank_layer, --rank_dim" in err[0]
    assert main(["decompose", "--teacher_model", "t", "--output_dir", "o", "--hooi_sweeps", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "xcompress decompose: error: --hooi_sweeps -1: must be >= 0"
    assert main(["finetune", "--model", "m", "--task_name", "SST-2", "--data_dir", "d", "--output_dir", "o",
                 "--warmup-proportion", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "xcompress finetune: error: --warmup_proportion 1.5: must be in [0, 1)"


def test_every_stage_declares_its_flags_once_on_its_config():
    """No stage module keeps a parser function of its own: the config dataclass is the only declaration."""
    from stagekit.cli import stage_module

    for name in STAGES:
        module = stage_module(name)
        assert dataclasses.is_dataclass(module.CONFIG) and not hasattr(module, "add_arguments"), name
        build_parser(name)  # every field makes a flag


def _limited_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
    return apply


@pytest.mark.parametrize("stage", ["decompose", "pregenerate"])
def test_an_operating_system_error_is_one_line_and_leaves_nothing(stage, tmp_path):
    """A write the operating system refuses (here: a file-size limit, as a full disk would) ends the stage with
    one line naming the cause, exit status 1, and nothing under the output name."""
    out = tmp_path / "out"
    args = {"decompose": ["--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "36", "--rank_dim", "192"],
            "pregenerate": ["--train_corpus", str(REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"), "--bert_model",
                            "all-MiniLM-L6-v2", "--do_lower_case", "--epochs_to_generate", "1", "--max_seq_len", "128", "--quiet"]}[stage]
    env = os.environ | {"XCOMPRESS_MALLOC": "system"}
    run = subprocess.run([str(Path(sys.executable).parent / "xcompress"), stage, *args, "--output_dir", str(out)],
                         capture_output=True, text=True, cwd=REPO, env=env, preexec_fn=_limited_file_size(200_000),
                         timeout=600)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(err) == 1, run.stderr[-2000:]
    assert err[0].startswith(f"xcompress {stage}: error: {tmp_path}") and "File too large" in err[0], err[0]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_every_stage_takes_quiet():
    """--quiet is a common flag: a stage without one of its own still accepts it (and silences tqdm)."""
    from stagekit.cli import build_parser

    for stage in STAGES:
        sub = next(a for a in build_parser(stage)._actions if a.dest == "command").choices[stage]
        assert "--quiet" in sub._option_string_actions, stage
