"""SLURM for real: a single-node cluster (munged, slurmctld, slurmd from Debian's slurm-wlm and munge) started by
this module on localhost and stopped by PID. Jobs rendered and submitted by `xcompress submit`: pregeneration as
a job array over dump parts, a 2-task Horovod general distillation under srun on its shards, a pipeline as a
chain of afterok jobs, a failing chain, and the launch scripts' and submit's bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from corpora.pregenerated import PregeneratedEpochs, read_vocab_ids
from pregenerate.sources import iter_documents
from stagekit.cli import main
from tests import wiki_twins
from tests.conftest import REPO

DAEMONS = ("munged", "slurmctld", "slurmd")
TINY = REPO / "data/wiki/enwiki-20250201-tiny.xml.bz2"
DUMP = REPO / "data/wiki/enwiki-sample-206pages.xml.bz2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """munged + slurmctld + slurmd with files, keys and ports of their own, in `root`."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"

    def start(self) -> None:
        missing = [d for d in DAEMONS if shutil.which(d, path="/usr/sbin:/usr/bin:" + os.environ["PATH"]) is None]
        assert not missing, f"{', '.join(missing)} not installed: `make setup` installs slurm-wlm and munge as root"
        assert os.geteuid() == 0, "slurmd runs each job as its user and must itself run as root"
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True)
        (r / "munge").chmod(0o755)  # munged refuses a socket directory others could write to
        key = r / "munge/munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("/usr/sbin/munged", "-F", f"--socket={r}/munge/munge.sock", f"--key-file={key}",
                    f"--log-file={r}/munge/munged.log", f"--pid-file={r}/munge/munged.pid",
                    f"--seed-file={r}/munge/munged.seed")
        self._wait(lambda: (r / "munge/munge.sock").exists(), "munged's socket")
        host = socket.gethostname().split(".")[0]
        mem_mb = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 1024
        self.conf.write_text(f"""ClusterName=xctest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
EnforcePartLimits=ALL
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={mem_mb - 1024} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("/usr/sbin/slurmctld", "-D", "-c", "-i")
        self._spawn("/usr/sbin/slurmd", "-D")
        self._wait(lambda: "idle" in self.run("sinfo", "-h", "-o", "%T").stdout, "the node to be idle")

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready, what: str, seconds: float = 30) -> None:
        deadline = time.time() + seconds
        while not ready():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            assert not dead and time.time() < deadline, f"SLURM test cluster: no {what} (dead: {dead}); logs in {self.root}/log"
            time.sleep(0.2)

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def slurm():
    # munged wants every directory above its socket searchable by all: pytest's own temporary tree is 0700
    root = Path(tempfile.mkdtemp(prefix="xcompress-slurm-"))
    root.chmod(0o755)
    cluster = LocalSlurm(root)
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)
        yield cluster
    finally:
        os.environ.pop("SLURM_CONF", None)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("slurm-work")


def submit(work: Path, *args: str) -> int:
    return main(["submit", "--log_dir", str(work / "logs"), *args])


def _job_times(cluster: LocalSlurm, job_id: str) -> tuple[str, str]:
    fields = dict(f.split("=", 1) for f in cluster.run("scontrol", "show", "job", "-o", job_id).stdout.split()
                  if "=" in f)
    return fields["StartTime"], fields["EndTime"]


@pytest.fixture(scope="module")
def shards(slurm, work):
    """Two dump parts pre-generated by a 2-task job array into shard_000/ and shard_001/."""
    parts = work / "dump-parts"
    parts.mkdir()
    for name in ("enwiki-part1.xml.bz2", "enwiki-part2.xml.bz2"):
        shutil.copy(TINY, parts / name)
    assert submit(work, "--wait", "pregenerate", "--train_corpus", str(parts), "--bert_model", "all-MiniLM-L6-v2",
                  "--do_lower_case", "--epochs_to_generate", "1", "--max_seq_len", "64",
                  "--output_dir", str(work / "pregen")) == 0
    return work / "pregen"


@pytest.fixture(scope="module")
def student(work):
    out = work / "td-12-32"
    assert main(["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "32",
                 "--output_dir", str(out)]) == 0
    return out


@pytest.mark.slow
def test_pregeneration_array_writes_one_shard_per_dump_part(shards, teacher_dir):
    assert sorted(p.name for p in shards.iterdir()) == ["shard_000", "shard_001"]
    one = json.loads((shards / "shard_000/pregenerate_summary.json").read_text())["instances_per_epoch"][0]
    data = PregeneratedEpochs(shards, read_vocab_ids(teacher_dir / "vocab.txt"))
    assert data.num_examples(0) == 2 * one  # general distillation reads the shards as one epoch
    assert data.batch(0, data.example_ids(0, 1, 0, 1)[:4])["input_ids"].shape[0] == 4
    data.close()


@pytest.mark.slow
def test_one_multistream_dump_is_cut_into_array_slices(slurm, work):
    multi = wiki_twins.multistream(DUMP, work / "enwiki-multistream.xml.bz2")
    out = work / "pregen-slices"
    assert submit(work, "--wait", "--dump_parts", "2", "pregenerate", "--train_corpus", str(multi), "--bert_model",
                  "all-MiniLM-L6-v2", "--do_lower_case", "--epochs_to_generate", "1", "--max_seq_len", "64",
                  "--output_dir", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shard_000", "shard_001"]
    shards = [json.loads((out / f"shard_00{i}/pregenerate_summary.json").read_text()) for i in (0, 1)]
    whole = [d.title for d in iter_documents(DUMP) if d.text]
    assert all(s["documents"] > 10 for s in shards)
    assert sum(s["documents"] for s in shards) + sum(s["dropped_documents"] for s in shards) == len(whole)


@pytest.mark.slow
def test_two_task_horovod_general_distillation_under_srun(slurm, work, shards, student, capsys):
    out = work / "gd"
    assert submit(work, "--wait", "--ntasks_per_node", "2", "general-distill", "--teacher_model", "all-MiniLM-L6-v2",
                  "--student_model", str(student), "--pregenerated_data", str(shards), "--train_batch_size", "8",
                  "--learning_rate", "1e-3", "--max_steps", "6", "--output_dir", str(out), "--quiet") == 0
    job_id = capsys.readouterr().out.split("submitted job ")[1].split(":")[0]
    summary = json.loads((out / "general_distill_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "horovod"  # srun --mpi=pmix, no mpirun
    checks = summary["parameter_checksums_by_rank"]
    assert len(checks) == 2 and checks[0] == checks[1] and summary["final_loss"] < summary["first_loss"]
    assert "2 task(s)" in (work / f"logs/xc-general-distill-{job_id}.out").read_text()


def _pipeline(work: Path, name: str, teacher: str, shards: Path) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(f"""name: {name}
work_dir: {work / name}
stages:
  - stage: decompose
    id: td
    args: {{teacher_model: {teacher}, rank_layer: 12, rank_dim: 32}}
  - stage: general-distill
    id: gd
    launcher: slurm:2
    args: {{teacher_model: all-MiniLM-L6-v2, student_model: "${{td.output_dir}}", pregenerated_data: {shards},
           train_batch_size: 8, max_steps: 3, quiet: true}}
""")
    return path


@pytest.mark.slow
def test_pipeline_runs_as_a_chain_of_jobs_in_order(slurm, work, shards, capsys):
    config = _pipeline(work, "chain", "all-MiniLM-L6-v2", shards)
    assert submit(work, "--wait", "pipeline", str(config)) == 0
    out = capsys.readouterr().out
    first, second = (line.split()[2].rstrip(":") for line in out.splitlines() if line.startswith("submitted job"))
    assert f"after job(s) {first}" in out
    assert _job_times(slurm, first)[1] <= _job_times(slurm, second)[0]  # td ended before gd started
    assert json.loads((work / "chain/gd/general_distill_summary.json").read_text())["world_size"] == 2
    assert submit(work, "pipeline", str(config)) == 0  # everything complete: nothing to submit
    assert "every stage is complete" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failing_job_fails_submit_and_cancels_its_dependents(slurm, work, shards, capsys):
    config = _pipeline(work, "failing", str(work / "no-such-teacher"), shards)
    assert submit(work, "--wait", "pipeline", str(config)) == 1
    err = capsys.readouterr().err
    assert "stage td (decompose" in err and "ended FAILED" in err and "no-such-teacher: no such directory" in err
    assert "CANCELLED" in err and not (work / "failing/gd").exists()


@pytest.mark.slow
def test_slurm_refusals_are_shown_verbatim_and_nothing_is_left(slurm, work, shards, capsys):
    decompose = ["decompose", "--teacher_model", "all-MiniLM-L6-v2", "--rank_layer", "12", "--rank_dim", "32",
                 "--output_dir", str(work / "never")]
    logs = work / "refused-logs"
    assert main(["submit", "--log_dir", str(logs), "--partition", "nope", *decompose]) == 2
    assert "Invalid partition name specified" in capsys.readouterr().err
    assert main(["submit", "--log_dir", str(logs), "--mem", "100000G", *decompose]) == 2
    assert "Requested node configuration is not available" in capsys.readouterr().err
    # a chain whose second job is refused: the first is cancelled too
    config = _pipeline(work, "greedy", "all-MiniLM-L6-v2", shards)
    config.write_text(config.read_text().replace("slurm:2", "slurm:64"))
    assert main(["submit", "--log_dir", str(logs), "pipeline", str(config)]) == 2
    captured = capsys.readouterr()
    first = captured.out.split("submitted job ")[1].split(":")[0]
    assert "cancelled the job(s) already submitted" in captured.err
    assert "CANCELLED" in slurm.run("scontrol", "show", "job", first).stdout
    assert list(logs.glob("*.sbatch")) == [] and list(logs.glob(".*.tmp")) == []


def test_bad_input_before_anything_is_submitted(work, capsys, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["submit", "decompose", "--teacher_model", "x", "--output_dir", str(work / "x")]) == 2
    assert "sbatch not found on PATH" in capsys.readouterr().err
    assert main(["submit", "general-distill", "--teacher_model", "t", "--student_model", "s", "--pregenerated_data",
                 "p", "--output_dir", "o", "--time", "1:00:00"]) == 2
    assert "submit's own flags go before the stage name" in capsys.readouterr().err
    assert main(["submit", "--nodes", "2", "--ntasks_per_node", "3", "general-distill", "--teacher_model", "t",
                 "--student_model", "s", "--pregenerated_data", "p", "--output_dir", "o", "--train_batch_size", "32"]) == 2
    assert "must divide by the 6 tasks" in capsys.readouterr().err


def test_launch_scripts_refuse_bad_hosts_and_options(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# no hosts yet\n\n")
    for cmd, said in [(["scripts/general_distill.sh", "--hostfile", str(hosts), "--"], "names no hosts"),
                      (["scripts/general_distill.sh", "--hostfile", str(tmp_path / "none")], "no such file"),
                      (["scripts/general_distill.sh", "-np", "0"], "positive number"),
                      (["scripts/task_distill.sh", "--nnodes", "2", "--"], "needs --rdzv_endpoint"),
                      (["scripts/task_distill.sh", "--stage", "prune"], "expected task-distill")]:
        res = subprocess.run(["bash", *cmd], cwd=REPO, capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")})
        assert res.returncode == 2 and said in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
