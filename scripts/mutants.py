#!/usr/bin/env python3
"""Injects known Raft bugs, one at a time, into a throwaway git worktree and
reports how many simulator seeds (and seconds) it takes to catch each.
Usage: python3 scripts/mutants.py [--seeds N]   (run from the repository root)
"""
import os, subprocess, sys, time, shutil

SEEDS = int(sys.argv[sys.argv.index('--seeds') + 1]) if '--seeds' in sys.argv else 2000

MUTANTS = [
    ("figure 8: commit by counting replicas of an older term",
     "src/raft/log.ts",
     "if (maxIndex > this.committed && this.termOrZero(maxIndex) === term) {",
     "if (maxIndex > this.committed && this.termOrZero(maxIndex) > 0) {"),
    ("vote without the up-to-date check (§5.4.1)",
     "src/raft/raft.ts",
     "if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {",
     "if (canVote) {"),
    ("vote twice in a term (forget the vote)",
     "src/raft/raft.ts",
     "      this.vote === m.from ||\n      (this.vote === NONE && this.leader === NONE) ||",
     "      true ||"),
    ("vote not persisted (hard state omits it)",
     "src/raft/raw-node.ts",
     "hardState = { term: raft.term, vote: raft.vote, commit: log.committed };",
     "hardState = { term: raft.term, vote: 0, commit: log.committed };"),
    ("leader ignores a higher term (does not step down)",
     "src/raft/raft.ts",
     "      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {\n        this.becomeFollower(m.term, m.from);\n      } else {\n        this.becomeFollower(m.term, NONE);\n      }",
     "      } else if (m.type === MessageType.App || m.type === MessageType.Heartbeat || m.type === MessageType.Snap) {\n        this.becomeFollower(m.term, m.from);\n      } else if (this.role !== Role.Leader) {\n        this.becomeFollower(m.term, NONE);\n      }"),
    ("entries handed out as committed before they are (apply before commit)",
     "src/raft/log.ts",
     "    if (lo > this.committed) return [];\n    return this.slice(lo, this.committed + 1, maxBytes);",
     "    if (lo > this.lastIndex()) return [];\n    return this.slice(lo, this.lastIndex() + 1, maxBytes);"),
    ("ReadIndex served without a heartbeat quorum",
     "src/raft/raft.ts",
     "if (this.isSingleVoter() || this.readOnlyLease) {",
     "if (true) {"),
    ("follower appends without checking the previous entry's term",
     "src/raft/log.ts",
     "if (!this.matchTerm(index, logTerm)) return -1;",
     "if (index > this.lastIndex()) return -1;"),
    ("snapshot installed over a matching log (discarding it) is fine, but committing beyond the snapshot is not",
     "src/raft/raft.ts",
     "      this.log.commitTo(snapshot.index);\n      return false;",
     "      this.log.commitTo(this.log.lastIndex());\n      return false;"),
]

root = os.getcwd()
worktree = '/tmp/raftkv-mutant'
results = []
for name, path, old, new in MUTANTS:
    subprocess.run(['git', 'worktree', 'remove', '--force', worktree], capture_output=True)
    subprocess.run(['git', 'worktree', 'add', '-f', '--detach', worktree, 'HEAD'], check=True, capture_output=True)
    os.symlink(os.path.join(root, 'node_modules'), os.path.join(worktree, 'node_modules'))
    file = os.path.join(worktree, path)
    source = open(file).read()
    if old not in source:
        results.append((name, 'PATCH DID NOT APPLY', ''))
        continue
    open(file, 'w').write(source.replace(old, new, 1))
    started = time.time()
    out = subprocess.run(['node', '--import', 'tsx', 'scripts/sim.ts', '--seeds', str(SEEDS)], cwd=worktree, capture_output=True, text=True)
    elapsed = time.time() - started
    first = next((l for l in out.stdout.splitlines() if 'FAILED' in l), None)
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    results.append((name, first or 'NOT CAUGHT', f'{summary} [{elapsed:.1f} s]'))
subprocess.run(['git', 'worktree', 'remove', '--force', worktree], capture_output=True)
for name, first, summary in results:
    print(f'- {name}\n    first failure: {first[:200]}\n    {summary}')
