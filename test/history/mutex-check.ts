// The mutex check: no two holders of the lock at once, judged by revisions.
// Each holding is named by its fence — the lock key and its create revision
// (Mutex.fence()) — and each holder, once lock() returned, makes a few
// writes guarded by that fence: txn().if(createRevision(own key) ==
// fence).then(put(shared key, ...)). The revisions of the guarded writes
// that succeeded, sorted, must show each holding as one unbroken run: never
// holder A, then B, then A again.
//
// Why this is sound (no false alarm), also with unknown outcomes. In an
// etcd-style lock the holder is the live key with the lowest create
// revision; once a key is lowest it stays lowest until it is deleted (later
// keys get higher create revisions), so holding H is "first" exactly over a
// revision interval [first_H, deleted_H), and those intervals are disjoint
// across holdings. A holder writes only after lock() returned, which is
// after it saw itself first; its guarded write succeeds only while its key
// (that generation) exists, i.e. before deleted_H. So every successful
// guarded write of H has a revision inside H's interval, and the writes of
// distinct holdings cannot interleave. Only writes acknowledged ok with
// succeeded = true are used: leaving out writes of unknown outcome only
// removes evidence, and the property holds for any subset of the committed
// writes. A mutex that lets a second holder in while the first is still
// first produces interleaved guarded writes as soon as their critical
// sections overlap.

export interface FencedWrite {
  readonly client: number;
  /** `lock key @ create revision`. */
  readonly holder: string;
  /** Revision of the successful guarded write. */
  readonly revision: number;
}

export interface MutexCheckResult {
  readonly violations: readonly string[];
  readonly holdings: number;
  readonly writes: number;
}

export function checkMutex(writes: readonly FencedWrite[]): MutexCheckResult {
  const violations: string[] = [];
  const sorted = [...writes].sort((left, right) => left.revision - right.revision);
  const finished = new Map<string, FencedWrite>(); // holdings whose run ended, with their last write
  let current: FencedWrite | undefined;
  let previous: FencedWrite | undefined;
  for (const write of sorted) {
    if (previous !== undefined && previous.revision === write.revision && violations.length < 8) {
      violations.push(`two guarded writes got revision ${write.revision} (${previous.holder} and ${write.holder})`);
    }
    previous = write;
    if (current !== undefined && current.holder === write.holder) {
      current = write;
      continue;
    }
    if (current !== undefined) finished.set(current.holder, current);
    const earlier = finished.get(write.holder);
    if (earlier !== undefined && violations.length < 8) {
      violations.push(
        `two holders at once: ${write.holder} (client ${write.client}) wrote at revisions ${earlier.revision} and ${write.revision}, ` +
          `and ${current?.holder} (client ${current?.client}) wrote at revision ${current?.revision} in between`,
      );
    }
    current = write;
  }
  return { violations, holdings: new Set(writes.map((write) => write.holder)).size, writes: writes.length };
}
