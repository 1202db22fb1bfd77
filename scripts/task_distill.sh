#!/usr/bin/env bash
# Task distillation (or fine-tuning) under torchrun, on one node or several (c10d rendezvous).
#
#   scripts/task_distill.sh --nproc_per_node 4 -- \
#       --teacher_model runs/teacher-sst2 --student_model runs/gd --task_name SST-2 --data_dir data/glue/SST-2 \
#       --output_dir runs/td-sst2 --pred_distill
#   on each of 2 nodes:  scripts/task_distill.sh --nnodes 2 --nproc_per_node 4 --rdzv_endpoint node0:29400 -- …
#   inside a SLURM job, one task per node (srun --ntasks-per-node=1 scripts/task_distill.sh …): the node count,
#   the rendezvous host (the job's first node) and the rendezvous id (the job id) come from SLURM.
#   --stage finetune runs `xcompress finetune` the same way (--stage general-distill: DDP instead of Horovod).
#
# Everything after `--` goes to the stage. The Python is $XCOMPRESS_PYTHON, else the project's .venv.
set -euo pipefail

die() { echo "task_distill.sh: error: $*" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${XCOMPRESS_PYTHON:-$root/.venv/bin/python}
stage=task-distill nproc=1 nnodes="" endpoint="" rdzv_id=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --nproc_per_node|--nproc-per-node) [[ $# -ge 2 ]] || die "$1 needs a number"; nproc=$2; shift 2 ;;
    --nnodes) [[ $# -ge 2 ]] || die "$1 needs a number"; nnodes=$2; shift 2 ;;
    --rdzv_endpoint|--rdzv-endpoint) [[ $# -ge 2 ]] || die "$1 needs HOST:PORT"; endpoint=$2; shift 2 ;;
    --rdzv_id|--rdzv-id) [[ $# -ge 2 ]] || die "$1 needs an id"; rdzv_id=$2; shift 2 ;;
    --stage) [[ $# -ge 2 ]] || die "$1 needs a stage"; stage=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (the stage's own flags go after --)" ;;
  esac
done
case $stage in task-distill|finetune|general-distill) ;; *) die "--stage $stage: expected task-distill, finetune or general-distill" ;; esac
[[ $nproc =~ ^[1-9][0-9]*$ ]] || die "--nproc_per_node $nproc: expected a positive number"
[[ -x $py ]] || die "no Python at $py (run \`make setup\`, or set XCOMPRESS_PYTHON)"

if [[ -z $nnodes && -n ${SLURM_JOB_NUM_NODES:-} ]]; then
  nnodes=$SLURM_JOB_NUM_NODES
  endpoint=${endpoint:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):29400}
  rdzv_id=${rdzv_id:-$SLURM_JOB_ID}
fi
nnodes=${nnodes:-1}
[[ $nnodes =~ ^[1-9][0-9]*$ ]] || die "--nnodes $nnodes: expected a positive number"
if (( nnodes == 1 )); then
  rdzv=(--standalone)
else
  [[ -n $endpoint ]] || die "--nnodes $nnodes needs --rdzv_endpoint HOST:PORT (or a SLURM job to take it from)"
  rdzv=(--nnodes "$nnodes" --rdzv_backend c10d --rdzv_endpoint "$endpoint" --rdzv_id "${rdzv_id:-xcompress}")
fi
exec "$py" -m torch.distributed.run "${rdzv[@]}" --nproc_per_node "$nproc" -m compress "$stage" "$@"
