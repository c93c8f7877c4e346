#!/bin/sh
# labbuilder-agent: a node's main process, starting what labbuilder hands it — as a kubelet starts
# a node's pods. A job is a shell script; its name arrives through the fifo $DIR/in, and the agent
# runs it as its own child, so what the job starts lives in the node's cgroup, with the node's
# capabilities, seccomp and AppArmor profile, as `docker exec` would give it, but without a
# `docker exec` round trip. Output goes to JOB.out, then the exit status to JOB.rc (the caller
# polls for it: a caller that died never blocks the agent). The fifo lives in the node's /dev/shm,
# a tmpfs Docker makes anew at every start: it exists exactly while this agent runs.
DIR=/dev/shm/labbuilder-agent
mkdir -p "$DIR"
rm -f "$DIR/in"
mkfifo -m 0600 "$DIR/in"
exec 3<>"$DIR/in" # read-write: opening it never blocks, and a writer never meets "no reader"
while read -r job <&3; do
	case "$job" in "$DIR"/job.*) ;; *) continue ;; esac
	sh -e "$job.sh" >"$job.out" 2>&1 </dev/null # -e: a job stops at its first failure
	echo $? >"$job.rc.part" && mv "$job.rc.part" "$job.rc"
done
