#!/usr/bin/env python3
"""Injects known Raft bugs, one at a time, into a throwaway git worktree of
HEAD and reports how many simulator seeds (and seconds) it takes to catch
each. Nothing is ever changed in the working tree.
Usage: python3 scripts/mutants.py [--seeds N] [--only SUBSTRING]   (from the repository root)
"""
import os, re, subprocess, sys, time

SEEDS = int(sys.argv[sys.argv.index('--seeds') + 1]) if '--seeds' in sys.argv else 2000
ONLY = sys.argv[sys.argv.index('--only') + 1] if '--only' in sys.argv else None

# (name, [(path, old, new), ...]): every patch of a mutant is applied.
MUTANTS = [
    ("figure 8: commit by counting replicas of an older term", [
        ("src/raft/log.ts",
         "if (maxIndex > this.committed && this.termOrZero(maxIndex) === term) {",
         "if (maxIndex > this.committed && this.termOrZero(maxIndex) > 0) {")]),
    ("vote without the up-to-date check (§5.4.1)", [
        ("src/raft/raft.ts",
         "if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {",
         "if (canVote) {")]),
    ("vote twice in a term (forget the vote)", [
        ("src/raft/raft.ts",
         "      this.vote === m.from ||\n      (this.vote === NONE && this.leader === NONE) ||",
         "      true ||")]),
    ("vote not persisted (hard state omits it)", [
        ("src/raft/raw-node.ts",
         "hardState = { term: raft.term, vote: raft.vote, commit: log.committed };",
         "hardState = { term: raft.term, vote: 0, commit: log.committed };")]),
    ("leader ignores a higher term (does not step down)", [
        ("src/raft/raft.ts",
         "      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {\n        this.becomeFollower(m.term, m.from);\n      } else {\n        this.becomeFollower(m.term, NONE);\n      }",
         "      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {\n        this.becomeFollower(m.term, m.from);\n      } else if (this.role !== Role.Leader) {\n        this.becomeFollower(m.term, NONE);\n      }")]),
    ("entries handed out as committed before they are (apply before commit)", [
        ("src/raft/log.ts",
         "    if (lo > this.committed) return [];\n    return this.slice(lo, this.committed + 1, maxBytes);",
         "    if (lo > this.lastIndex()) return [];\n    return this.slice(lo, this.lastIndex() + 1, maxBytes);")]),
    ("ReadIndex served without a heartbeat quorum", [
        ("src/raft/raft.ts",
         "if (this.isSingleVoter() || this.readOnlyLease) {",
         "if (true) {")]),
    ("follower appends without checking the previous entry's term", [
        ("src/raft/log.ts",
         "if (!this.matchTerm(index, logTerm)) return -1;",
         "if (index > this.lastIndex()) return -1;")]),
    ("follower commits past an installed snapshot's index", [
        ("src/raft/raft.ts",
         "      this.log.commitTo(snapshot.index);\n      return false;",
         "      this.log.commitTo(this.log.lastIndex());\n      return false;")]),
    # ---- membership ----
    ("joint configuration: commit ignores the outgoing majority", [
        ("src/raft/quorum.ts",
         "const committed = Math.min(majorityCommitted(incoming, acked), majorityCommitted(outgoing, acked));",
         "const committed = majorityCommitted(incoming, acked);")]),
    ("joint configuration: elections ignore the outgoing majority", [
        ("src/raft/quorum.ts",
         "  const b = majorityVote(outgoing, votes);",
         "  const b = majorityVote(incoming, votes);")]),
    ("learners count toward commit", [
        ("src/raft/raft.ts",
         "const index = jointCommitted(this.conf.voters, this.conf.votersOutgoing, acked);",
         "const index = jointCommitted([...this.conf.voters, ...this.conf.learners], this.conf.votersOutgoing, acked);")]),
    ("learners may campaign", [
        ("src/raft/raft.ts",
         "return progress !== undefined && !progress.isLearner && this.log.unstableSnapshot === null;",
         "return progress !== undefined && this.log.unstableSnapshot === null;")]),
    ("campaign with an unapplied committed membership change (etcd #12133)", [
        ("src/raft/raft.ts",
         "if (this.hasUnappliedConfChange()) return; // etcd #12133",
         "")]),
    ("a removed or demoted leader keeps leading (etcd #11038)", [
        ("src/raft/raft.ts",
         "      if (this.progress.get(this.id)?.isLearner !== false) {",
         "      if (false) {")]),
    ("installing a snapshot keeps the old configuration", [
        ("src/raft/raft.ts",
         "    this.log.restore(snapshot);\n    this.setConf(snapshot.confState);",
         "    this.log.restore(snapshot);")]),
    ("vote rejections carry no commit index (etcd #12359)", [
        ("src/raft/raft.ts",
         "    if ((m.type === MessageType.VoteResp || m.type === MessageType.PreVoteResp) && m.reject) this.learnCommitFromVoter(m);",
         "")]),
    ("commit index of a vote rejection trusted without the log-match check", [
        ("src/raft/raft.ts",
         "m.commit <= this.log.lastIndex() && this.log.matchTerm(m.commit, m.logTerm)",
         "m.commit <= this.log.lastIndex()")]),
    ("a candidate removed mid-campaign keeps campaigning", [
        ("src/raft/raft.ts",
         "      if (this.role !== Role.Leader && this.role !== Role.Follower && this.hasUnappliedConfChange()) this.becomeFollower(this.term, NONE);",
         ""),
        ("src/raft/raft.ts",
         "    } else if (this.role !== Role.Follower && !this.promotable()) {",
         "    } else if (false) {")]),
    ("snapshot installed while the host applies a committed conf change", [
        ("src/raft/raw-node.ts",
         "    if (type === MessageType.Snap && this.outstanding !== null && this.outstanding.appliedThrough > this.raft.log.applied) return;",
         "")]),
]

KINDS = [('election safety', 'election safety'), ('without being a voter', 'non-voter leader'), ('still leader', 'removed leader still leading'),
         ('log matching', 'log matching'), ('leader completeness', 'leader completeness'), ('state machine safety', 'state machine safety'),
         ('cannot apply the committed membership change', 'conf change cannot apply'), ('stale read', 'stale read'), ('liveness', 'liveness'),
         (' applies ', 'apply order')]


def kind(message):
    for needle, name in KINDS:
        if needle in message:
            return name
    return re.sub(r'\d+', 'N', message)[:60]


root = os.getcwd()
worktree = '/tmp/raftkv-mutant'
results = []
for name, patches in MUTANTS:
    if ONLY is not None and ONLY not in name:
        continue
    subprocess.run(['git', 'worktree', 'remove', '--force', worktree], capture_output=True)
    subprocess.run(['git', 'worktree', 'add', '-f', '--detach', worktree, 'HEAD'], check=True, capture_output=True)
    os.symlink(os.path.join(root, 'node_modules'), os.path.join(worktree, 'node_modules'))
    applied = True
    for path, old, new in patches:
        file = os.path.join(worktree, path)
        source = open(file).read()
        if old not in source:
            applied = False
            break
        open(file, 'w').write(source.replace(old, new, 1))
    if not applied:
        results.append((name, 'PATCH DID NOT APPLY', '', ''))
        continue
    started = time.time()
    out = subprocess.run(['node', '--import', 'tsx', 'scripts/sim.ts', '--seeds', str(SEEDS)], cwd=worktree, capture_output=True, text=True)
    elapsed = time.time() - started
    failures = [l for l in out.stdout.splitlines() if 'FAILED' in l]
    kinds = sorted({kind(l) for l in failures})
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    results.append((name, failures[0] if failures else 'NOT CAUGHT', ', '.join(kinds), f'{summary} [{elapsed:.1f} s]'))
    print(f'- {name}: {len(failures)} failing seeds ({", ".join(kinds)}) [{elapsed:.1f} s]', file=sys.stderr, flush=True)
subprocess.run(['git', 'worktree', 'remove', '--force', worktree], capture_output=True)
for name, first, kinds, summary in results:
    print(f'- {name}\n    caught by: {kinds or "-"}\n    first failure: {first[:200]}\n    {summary}')
