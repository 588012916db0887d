#!/usr/bin/env bash
# Injects one known bug into src (issue 8: "each deliberately injected bug is
# caught within the CI budget"), in a throwaway git worktree of HEAD, runs a
# check there and reports how long it took until the first failure. Nothing
# in the working tree is touched; the worktree is removed at the end.
#
#   scripts/inject-history-bugs.sh list
#   scripts/inject-history-bugs.sh NAME                    # runs: npm test -- history
#   scripts/inject-history-bugs.sh NAME -- CMD ARGS...     # e.g. -- node --import tsx test/history/run-seeds.ts 1 20
#   scripts/inject-history-bugs.sh NAME --keep             # leave the worktree (to replay a seed by hand)
#   scripts/inject-history-bugs.sh NAME --stop-at-first    # end the check at its first failure (saves CPU)
#
# Every output line is prefixed with the seconds since the check started; the
# summary names the first failing line (spec reporter "✖", run-seeds "FAIL",
# tap "not ok") and its time, the exit status, the wall time and the load.
# Exit status: 1 if the bug was caught (a failing line), 0 if not.
# Run from the repository root, one at a time (CPU: the history CI alone
# keeps 2 cores busy for about 3 minutes).
set -euo pipefail

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage

patch_for() {
  case "$1" in
  stale-read)
    # A member that believes it leads serves linearizable reads from its own
    # store without a ReadIndex round: a leader cut off from the majority
    # keeps serving until check-quorum makes it step down.
    cat <<'EOF'
--- a/src/server/replicated-node.ts
+++ b/src/server/replicated-node.ts
@@ -205,3 +205,4 @@
   async readBarrier(): Promise<void> {
     this.ensureRunning();
+    if (this.isLeader) return; // INJECTED BUG: a member that believes it leads serves reads locally, no ReadIndex round
     const deadlineMs = Date.now() + this.requestTimeoutMs;
EOF
    ;;
  unsynced-log)
    # The Raft log's batches are written without fsync, yet save() resolves
    # as if they were durable (votes, terms, appended entries).
    cat <<'EOF'
--- a/src/storage/log/classic.ts
+++ b/src/storage/log/classic.ts
@@ -239,3 +239,3 @@
       }
-      await batch.write({ sync });
+      await batch.write({ sync: false && sync }); // INJECTED BUG: log batches are never synced, yet saves resolve as if durable
     } catch (error) {
EOF
    ;;
  unsynced-wal)
    # The same for the default log engine: segment records are written
    # through a descriptor without O_DSYNC and never fdatasynced, yet saves
    # resolve as if durable.
    cat <<'EOF'
--- a/src/storage/log/wal.ts
+++ b/src/storage/log/wal.ts
@@ -70,4 +70,4 @@
 /** O_DSYNC where the platform has it (Linux, macOS): a write to the active segment returns once durable. */
 const WRITES_SYNC = typeof constants.O_DSYNC === 'number' && constants.O_DSYNC !== 0;
-const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND | (WRITES_SYNC ? constants.O_DSYNC : 0);
+const APPEND_FLAGS = constants.O_WRONLY | constants.O_APPEND; // INJECTED BUG: segment writes are never synced, yet saves resolve as if durable
 /** Unsynced records wait in memory up to this many bytes before they are written on their own. */
EOF
    ;;
  ack-before-save)
    # Messages that acknowledge state (append responses, votes) are sent
    # before the Ready's entries and hard state are saved.
    cat <<'EOF'
--- a/src/server/replicated-node.ts
+++ b/src/server/replicated-node.ts
@@ -444,2 +444,3 @@
     }
+    this.send(ready.messages); // INJECTED BUG: acknowledgements (append responses, votes) leave before the save is durable
     if (ready.snapshot !== null || ready.entries.length > 0 || ready.hardState !== null) {
@@ -452,3 +453,2 @@
     }
-    this.send(ready.messages);
     for (const state of ready.readStates) this.reads.confirm(state.context, state.index);
EOF
    ;;
  reapply-all)
    # The store no longer skips entries at or below its applied index: after
    # a restart the core hands back every entry since the log's snapshot and
    # the store applies them again.
    cat <<'EOF'
--- a/src/storage/mvcc/store.ts
+++ b/src/storage/mvcc/store.ts
@@ -324,3 +324,3 @@
       previousIndex = item.index;
-      if (item.index <= appliedIndex) {
+      if (item.index <= appliedIndex && false) { // INJECTED BUG: entries at or below the applied index are applied again after a restart
         responses.push(undefined);
EOF
    ;;
  reapply-last)
    # Off by one: the last entry applied before a restart is applied again.
    cat <<'EOF'
--- a/src/storage/mvcc/store.ts
+++ b/src/storage/mvcc/store.ts
@@ -324,3 +324,3 @@
       previousIndex = item.index;
-      if (item.index <= appliedIndex) {
+      if (item.index < appliedIndex) { // INJECTED BUG: off by one, the last entry applied before a restart is applied again
         responses.push(undefined);
EOF
    ;;
  *) return 1 ;;
  esac
}

NAMES="stale-read unsynced-log unsynced-wal ack-before-save reapply-all reapply-last"
if [ "$1" = list ]; then
  for name in $NAMES; do echo "$name"; done
  exit 0
fi
name=$1
shift
patch_for "$name" >/dev/null || { echo "unknown bug '$name'; one of: $NAMES" >&2; exit 2; }
keep=0
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
  --keep) keep=1; shift ;;
  --stop-at-first) stop=1; shift ;;
  *) break ;;
  esac
done
if [ "${1:-}" = -- ]; then shift; fi
[ $# -gt 0 ] || set -- npm test -- history

root=$(git rev-parse --show-toplevel)
[ -d "$root/node_modules" ] || { echo "run npm ci in $root first" >&2; exit 2; }
worktree=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-inject-$name.XXXXXX")
cleanup() {
  if [ "$keep" = 1 ]; then echo "worktree kept: $worktree (remove: git worktree remove --force $worktree)"; return; fi
  git -C "$root" worktree remove --force "$worktree" >/dev/null 2>&1 || rm -rf "$worktree"
}
trap cleanup EXIT
git -C "$root" worktree add -f --detach "$worktree" HEAD >/dev/null 2>&1
ln -s "$root/node_modules" "$worktree/node_modules"
cd "$worktree"
if ! patch_for "$name" | git apply -v - 2>/tmp/inject-apply.$$; then
  cat /tmp/inject-apply.$$ >&2; rm -f /tmp/inject-apply.$$
  echo "the '$name' patch does not apply to HEAD ($(git rev-parse --short HEAD)): update it in $0" >&2
  exit 3
fi
rm -f /tmp/inject-apply.$$
echo "injected '$name' into $(git rev-parse --short HEAD) (worktree $worktree):"
git diff -U0 | grep '^[+-][^+-]' | sed 's/^/  /'
echo "running: $*"
export BUG=$name

node -e '
  const { spawn } = require("node:child_process");
  const readline = require("node:readline");
  const [stop, command, ...args] = process.argv.slice(1);
  const start = Date.now();
  const seconds = () => ((Date.now() - start) / 1000).toFixed(1).padStart(6);
  const failing = /✖|\bFAIL\b|^not ok/;
  let first = null;
  const child = spawn(command, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const onLine = (line) => {
    process.stdout.write(`[${seconds()}s] ${line}\n`);
    if (first !== null || !failing.test(line)) return;
    first = `${seconds()} s: ${line.trim().slice(0, 160)}`;
    if (stop === "1") {
      console.log("== stopping at the first failure (--stop-at-first)");
      try { process.kill(-child.pid, "SIGTERM"); } catch {}
    }
  };
  readline.createInterface({ input: child.stdout }).on("line", onLine);
  readline.createInterface({ input: child.stderr }).on("line", onLine);
  child.on("close", (code, signal) => {
    console.log(`\n== first failure: ${first ?? "none (not caught by this command)"}`);
    console.log(`== ${process.env.BUG}: exit ${code ?? signal}, wall time ${seconds().trim()} s, load average ${require("node:os").loadavg().map((l) => l.toFixed(1)).join(" ")}`);
    process.exit(first === null ? 0 : 1);
  });
' "$stop" "$@"
