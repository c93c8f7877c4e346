#!/bin/sh
# labbuilder-agent: a node's main process, starting what labbuilder hands it — as a kubelet starts
# a node's pods. A job is a shell script; its name arrives through the fifo $DIR/in, and the agent
# runs it as its own child, so what the job starts lives in the node's cgroup, with the node's
# capabilities, seccomp and AppArmor profile, as `docker exec` would give it, but without a
# `docker exec` round trip. Output goes to JOB.out, then the exit status into the fifo JOB.rc,
# which the caller made and reads from. The fifo lives in the node's /dev/shm,
# a tmpfs Docker makes anew at every start: it exists exactly while this agent runs.
DIR=/dev/shm/labbuilder-agent
# labbuilder starts nodes with Docker's networking disabled (no libnetwork sandbox: half the cost
# of a container start); the node is as sealed as with `--network none`, and gets the /etc/hosts
# Docker writes for one.
if [ ! -s /etc/hosts ]; then
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n' >/etc/hosts
	printf 'ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n' >>/etc/hosts
fi
mkdir -p "$DIR"
rm -f "$DIR/in"
mkfifo -m 0600 "$DIR/in"
exec 3<>"$DIR/in" # read-write: opening it never blocks, and a writer never meets "no reader"
while read -r job <&3; do
	case "$job" in "$DIR"/job.*) ;; *) continue ;; esac
	sh -e "$job.sh" >"$job.out" 2>&1 </dev/null # -e: a job stops at its first failure
	echo $? 1<>"$job.rc" # the caller's fifo, opened read-write: never blocks, even if the caller died
done
