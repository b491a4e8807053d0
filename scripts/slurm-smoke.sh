#!/usr/bin/env bash
# Checks, for real, that the private Slurm cluster of scripts/slurm.sh works:
#
#   bash scripts/slurm.sh up [--nodes N]
#   bash scripts/slurm-smoke.sh            # or: bash scripts/slurm.sh smoke
#
#   1. sinfo shows every node idle
#   2. `sbatch --wrap` runs a job, which writes its output file
#   3. `srun -N1 -n2 hostname` runs two tasks
#   4. `salloc -N1 -n2 srun ...`: salloc's command and the tasks see
#      SLURM_JOB_ID, SLURM_CPUS_ON_NODE, SLURM_JOB_NUM_NODES, SLURM_NTASKS
#   5. with N >= 2 nodes: `srun -N N` runs one task on every node
#   6. every node's tasks reach a TCP listener of this machine at
#      $CAICLUST_SLURM_HOST_ADDR (as ipyparallel engines reach a controller)
#   7. a job asking for more CPUs than the cluster has stays PENDING (with
#      the reason squeue shows), and scancel removes it
#   8. squeue is empty at the end
#
# Exits non-zero, with what failed, on the first failure.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${CAICLUST_SLURM_DIR:-$REPO/target/slurm}

log() { printf '[slurm-smoke] %s\n' "$*"; }
die() { printf '[slurm-smoke] FAIL: %s\n' "$*" >&2; exit 1; }

[ -f "$DIR/env.sh" ] || die "no $DIR/env.sh; run: bash scripts/slurm.sh up"
# shellcheck source=/dev/null
source "$DIR/env.sh"
NODES=${CAICLUST_SLURM_NODES:?}
CPUS=${CAICLUST_SLURM_CPUS_PER_NODE:?}
W=$DIR/smoke
rm -rf "$W"
mkdir -p "$W"
# Jobs run in the submission folder: one that every node sees.
cd "$W"
START=$(date +%s)

# wait_for <what> <seconds> <command...>
wait_for() {
    local what=$1 secs=$2 deadline
    shift 2
    deadline=$(($(date +%s) + secs))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "timed out (${secs}s) waiting for $what"
        sleep 0.3
    done
}

job_gone() { [ -z "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; }
queue_empty() { [ -z "$(squeue -h -o %i)" ]; }
all_idle() {
    [ "$(sinfo -h -N -o '%N %t' | awk '$2 == "idle"' | sort -u | wc -l)" -ge "$NODES" ]
}

# --- 1. nodes ----------------------------------------------------------------
log "1. sinfo: $NODES node(s) idle"
wait_for "$NODES idle node(s)" 30 all_idle
sinfo -N | sed 's/^/    /'

# --- 2. sbatch ---------------------------------------------------------------
log "2. sbatch --wrap"
# shellcheck disable=SC2016 # expanded by the job
job=$(sbatch --parsable -n1 -o "$W/batch-%j.out" \
    --wrap 'echo "batch job $SLURM_JOB_ID on $SLURMD_NODENAME ntasks=$SLURM_NTASKS"') ||
    die "sbatch failed"
job=${job%%;*}
wait_for "batch job $job to finish" 60 job_gone "$job"
out=$W/batch-$job.out
[ -s "$out" ] || die "batch job $job wrote no $out"
grep -q "^batch job $job on node[0-9]* ntasks=1\$" "$out" ||
    die "batch job $job output unexpected: $(cat "$out")"
log "   job $job: $(cat "$out")"

# --- 3. srun -----------------------------------------------------------------
log "3. srun -N1 -n2 hostname"
out=$(timeout 60 srun -N1 -n2 hostname) || die "srun -N1 -n2 hostname failed"
[ "$(printf '%s\n' "$out" | grep -c .)" = 2 ] || die "srun -N1 -n2 hostname: expected 2 lines, got: $out"
log "   $(printf '%s' "$out" | tr '\n' ' ')"

# --- 4. salloc ---------------------------------------------------------------
log "4. salloc -N1 -n2 srun: the job's environment"
# shellcheck disable=SC2016 # expanded in the allocation, not here
out=$(timeout 60 salloc -N1 -n2 bash -c '
    echo "salloc $SLURM_JOB_ID $SLURM_JOB_NUM_NODES $SLURM_NTASKS"
    srun bash -c "echo task \$SLURM_PROCID \$SLURM_JOB_ID \$SLURM_CPUS_ON_NODE \$SLURM_JOB_NUM_NODES \$SLURM_NTASKS"
' 2>"$W/salloc.err") || die "salloc failed: $(cat "$W/salloc.err")"
printf '%s\n' "$out" | sed 's/^/    /'
read -r _ ajob anodes antasks < <(printf '%s\n' "$out" | grep '^salloc ') ||
    die "salloc's command printed nothing"
case $ajob in '' | *[!0-9]*) die "SLURM_JOB_ID in salloc: '$ajob'" ;; esac
[ "$anodes" = 1 ] || die "SLURM_JOB_NUM_NODES in salloc: '$anodes', expected 1"
[ "$antasks" = 2 ] || die "SLURM_NTASKS in salloc: '$antasks', expected 2"
ntask=0
while read -r _ rank tjob tcpus tnodes tntasks; do
    ntask=$((ntask + 1))
    [ "$tjob" = "$ajob" ] || die "task $rank: SLURM_JOB_ID '$tjob', expected $ajob"
    case $tcpus in '' | *[!0-9]*) die "task $rank: SLURM_CPUS_ON_NODE '$tcpus'" ;; esac
    [ "$tcpus" -ge 2 ] || die "task $rank: SLURM_CPUS_ON_NODE $tcpus, expected >= 2"
    [ "$tnodes" = 1 ] || die "task $rank: SLURM_JOB_NUM_NODES '$tnodes', expected 1"
    [ "$tntasks" = 2 ] || die "task $rank: SLURM_NTASKS '$tntasks', expected 2"
done < <(printf '%s\n' "$out" | grep '^task ')
[ "$ntask" = 2 ] || die "salloc's srun ran $ntask task(s), expected 2"

# --- 5. every node -----------------------------------------------------------
if [ "$NODES" -ge 2 ]; then
    log "5. srun -N$NODES: one task per node"
    out=$(timeout 60 srun -N"$NODES" --ntasks-per-node=1 printenv SLURMD_NODENAME) ||
        die "srun -N$NODES failed"
    got=$(printf '%s\n' "$out" | sort -u | tr '\n' ' ')
    want=$(for i in $(seq 1 "$NODES"); do echo "node$i"; done | sort -u | tr '\n' ' ')
    [ "$got" = "$want" ] || die "srun -N$NODES ran on '$got', expected '$want'"
    log "   $got"
else
    log "5. (one node: no multi-node check)"
fi

# --- 6. tasks reach this machine ---------------------------------------------
HOST_ADDR=${CAICLUST_SLURM_HOST_ADDR:?}
log "6. srun -N$NODES: every node's task connects to $HOST_ADDR (TCP)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the listener of check 6"
python3 - "$HOST_ADDR" "$NODES" "$W/listener" <<'PY' &
import socket, sys
addr, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.bind((addr, 0))
s.listen(n)
s.settimeout(60)
with open(out + ".port.tmp", "w") as f:
    f.write(str(s.getsockname()[1]))
import os
os.rename(out + ".port.tmp", out + ".port")
got = []
for _ in range(n):
    c, _ = s.accept()
    got.append(c.makefile().readline().strip())
    c.close()
with open(out + ".got", "w") as f:
    f.write("\n".join(sorted(got)) + "\n")
PY
listener=$!
wait_for "the listener's port" 20 test -s "$W/listener.port"
port=$(cat "$W/listener.port")
# shellcheck disable=SC2016 # expanded by the tasks
timeout 60 srun -N"$NODES" --ntasks-per-node=1 bash -c \
    'exec 3<>"/dev/tcp/$0/$1" && echo "$SLURMD_NODENAME" >&3' "$HOST_ADDR" "$port" ||
    { kill "$listener" 2>/dev/null || true; die "a task could not connect to $HOST_ADDR:$port"; }
wait "$listener" || die "the listener did not hear from all $NODES node(s)"
log "   heard from: $(tr '\n' ' ' <"$W/listener.got")"
[ "$(grep -c . "$W/listener.got")" = "$NODES" ] || die "listener heard: $(cat "$W/listener.got")"

# --- 7. a job too big stays pending ----------------------------------------
too_many=$((NODES * CPUS + 1))
log "7. sbatch -n $too_many (the cluster has $((NODES * CPUS)) CPUs): PENDING, then scancel"
job=$(sbatch --parsable -n "$too_many" --wrap true) || die "sbatch -n $too_many failed"
job=${job%%;*}
has_reason() {
    local r
    r=$(squeue -h -j "$job" -o '%T %r')
    case $r in PENDING\ None | PENDING\ ) return 1 ;; PENDING\ *) return 0 ;; esac
    die "job $job is '$r', expected PENDING"
}
wait_for "a pending reason for job $job" 20 has_reason
# And it stays so past a scheduling pass or two.
sleep 3
state=$(squeue -h -j "$job" -o '%T %r')
case $state in PENDING\ *) ;; *) die "job $job is '$state' after 3s, expected PENDING" ;; esac
log "   job $job: $state"
squeue -j "$job" | sed 's/^/    /'
scancel "$job" || die "scancel $job failed"
wait_for "job $job to leave the queue" 20 job_gone "$job"

# --- 8. -----------------------------------------------------------------------
log "8. squeue empty"
wait_for "an empty queue" 20 queue_empty
log "OK: all checks passed in $(($(date +%s) - START))s"
