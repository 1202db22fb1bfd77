#!/usr/bin/env bash
# General distillation with N processes under mpirun (Horovod over MPI) or horovodrun.
#
#   scripts/general_distill.sh -np 8 --hostfile hosts.txt -- \
#       --teacher_model models/bert-base-uncased --student_model models/bert-gd-72-384 \
#       --pregenerated_data data/pregenerated --num_train_epochs 2 --train_batch_size 32 --output_dir runs/gd
#   scripts/general_distill.sh -np 2 -- …                           # this machine, 2 processes
#   scripts/general_distill.sh --launcher horovodrun --gloo -np 4 -- …
#
# Hosts: --hostfile (Open MPI's `host slots=N` lines or horovodrun's `host:N`; # comments), else the SLURM
# allocation this runs in, else localhost. -np defaults to the hosts' slots (SLURM: its task count).
# Everything after `--` goes to `xcompress general-distill`. The Python is $XCOMPRESS_PYTHON, else the project's .venv.
set -euo pipefail

die() { echo "general_distill.sh: error: $*" >&2; exit 2; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${XCOMPRESS_PYTHON:-$root/.venv/bin/python}
launcher=mpirun np="" hostfile="" gloo=""
while [[ $# -gt 0 ]]; do
  case $1 in
    -np|-n|--np) [[ $# -ge 2 ]] || die "$1 needs a number"; np=$2; shift 2 ;;
    --hostfile|-H) [[ $# -ge 2 ]] || die "$1 needs a file"; hostfile=$2; shift 2 ;;
    --launcher) [[ $# -ge 2 ]] || die "$1 needs mpirun or horovodrun"; launcher=$2; shift 2 ;;
    --gloo) gloo=--gloo; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (general-distill's own flags go after --)" ;;
  esac
done
[[ $launcher == mpirun || $launcher == horovodrun ]] || die "--launcher $launcher: expected mpirun or horovodrun"
[[ -z $np || $np =~ ^[1-9][0-9]*$ ]] || die "-np $np: expected a positive number of processes"
[[ -x $py ]] || die "no Python at $py (run \`make setup\`, or set XCOMPRESS_PYTHON)"

# hosts: "name slots" lines, from the hostfile, the SLURM allocation, or localhost
hosts=()
if [[ -n $hostfile ]]; then
  [[ -f $hostfile ]] || die "--hostfile $hostfile: no such file"
  while read -r line; do
    line=${line%%#*}
    [[ -n ${line// /} ]] || continue
    read -r name rest <<<"$line"
    slots=1
    if [[ $name == *:* ]]; then slots=${name#*:}; name=${name%%:*}; fi
    if [[ $rest =~ slots=([0-9]+) ]]; then slots=${BASH_REMATCH[1]}; fi
    [[ $slots =~ ^[1-9][0-9]*$ ]] || die "--hostfile $hostfile: bad slot count in line: $line"
    hosts+=("$name $slots")
  done <"$hostfile"
  [[ ${#hosts[@]} -gt 0 ]] || die "--hostfile $hostfile: names no hosts"
elif [[ -n ${SLURM_JOB_NODELIST:-} ]]; then
  per_node=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / ${SLURM_JOB_NUM_NODES:-1} ))}
  while read -r name; do hosts+=("$name ${per_node%%(*}"); done < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
else
  hosts=("localhost ${np:-1}")
fi
total=0
for h in "${hosts[@]}"; do total=$(( total + ${h#* } )); done
np=${np:-$total}

if [[ $launcher == mpirun ]]; then
  command -v mpirun >/dev/null || die "mpirun not found (install Open MPI: openmpi-bin; \`make setup\` does as root)"
  # Horovod's background thread waits inside MPI calls; without yielding, Open MPI busy-polls there and takes
  # the core from the rank's own compute thread (2 ranks on 2 cores: 8.6 -> 12.7 samples/s with it)
  args=(-np "$np" --bind-to none --map-by slot --mca mpi_yield_when_idle 1 -x PATH -x LD_LIBRARY_PATH -x PYTHONPATH)
  [[ $(id -u) == 0 ]] && args+=(--allow-run-as-root)
  (( np > total )) && args+=(--oversubscribe)
  if [[ -z ${SLURM_JOB_NODELIST:-} || -n $hostfile ]]; then
    # Open MPI takes hosts from a SLURM allocation itself; otherwise it gets them in its own format
    mpi_hosts=$(mktemp)
    trap 'rm -f "$mpi_hosts"' EXIT
    for h in "${hosts[@]}"; do echo "${h% *} slots=${h#* }"; done >"$mpi_hosts"
    args+=(--hostfile "$mpi_hosts")
  fi
  set +e
  mpirun "${args[@]}" "$py" -m compress general-distill "$@"
  exit $?
fi
horovodrun=$(dirname "$py")/horovodrun
[[ -x $horovodrun ]] || die "horovodrun not found next to $py (Horovod is not installed; see \`make setup\`)"
spec=$(for h in "${hosts[@]}"; do printf '%s:%s,' "${h% *}" "${h#* }"; done)
exec "$horovodrun" -np "$np" -H "${spec%,}" $gloo "$py" -m compress general-distill "$@"
