// The lease check: no key attached to a lease disappears before the lease's
// time-to-live, counted from the client's last acknowledged grant or
// renewal, has run out.
//
// Why the check never raises a false alarm. Times are Date.now() of this one
// process, the clock the leader's Lessor uses too (members are in-process).
// Let a grant or renewal of lease L with TTL t be invoked at time I and be
// acknowledged ok. It was committed and applied after I. The leader that
// expires L sets L's deadline, at a tick after it applied that renewal (or
// on first seeing L as leader), to now + t (or now + the checkpointed
// remainder, which is measured against an earlier leader's such deadline),
// so the deadline is at least I + t; it proposes the revoke only once
// now >= deadline, and the revoke carries the renewal count it saw, so a
// renewal applied in between makes the store refuse it. An ok renewal is
// therefore always before the expiry in the log, and the expiry was
// decided at or after I + t. A key of L is deleted only by L's expiry or
// revoke (each lease has its own keys; nothing else writes them). So:
//   - a watcher that received the delete of L's key at time R saw it after
//     it happened, hence R >= I + t for every ok grant/renewal of L — unless
//     the client invoked a revoke of L before R (any outcome: it may be the
//     cause);
//   - a linearizable get of L's key that returned "absent" at completion C,
//     invoked after the put attaching the key completed ok, saw the key
//     gone by C, hence C >= I + t — unless a revoke was invoked before C.
// Leader changes, lost renewals (unknown outcome) and restarts can only push
// the real expiry later than the bound, which the check allows. Late expiry
// is not checked (it is legal: a deadline restarts on a leader change).

export interface LeaseKey {
  readonly key: string;
  putOk: boolean;
  /** Date.now() when the put attaching it completed ok (Infinity until then). */
  putCompletedAtMs: number;
}

export interface LeaseGet {
  readonly key: string;
  readonly invokedAtMs: number;
  readonly completedAtMs: number;
  readonly present: boolean;
}

export interface LeaseRecord {
  readonly client: number;
  readonly id: number;
  readonly ttlSeconds: number;
  /** Date.now() right before each grant or renewal that was acknowledged ok (the grant first). */
  readonly acknowledgedInvokedAtMs: number[];
  /** Date.now() right before the first revoke the client invoked (any outcome). */
  revokeInvokedAtMs?: number;
  readonly keys: LeaseKey[];
  readonly gets: LeaseGet[];
}

/** A delete of a lease key that a watcher received. */
export interface ObservedDelete {
  readonly key: string;
  readonly revision: number;
  readonly receivedAtMs: number;
}

export interface LeaseViolation {
  readonly message: string;
}

export interface LeaseCheckResult {
  readonly violations: readonly LeaseViolation[];
  /** Deletions (by watch or get) of a key whose lease was never revoked by its client: expiries observed. */
  readonly expiriesObserved: number;
  readonly leases: number;
}

/** The earliest time the lease may expire: its last acknowledged grant or renewal's call plus the TTL. */
export function earliestExpiryMs(record: LeaseRecord): number {
  return Math.max(...record.acknowledgedInvokedAtMs) + record.ttlSeconds * 1000;
}

export function checkLeases(records: readonly LeaseRecord[], deletes: readonly ObservedDelete[]): LeaseCheckResult {
  const violations: LeaseViolation[] = [];
  const leaseOfKey = new Map<string, LeaseRecord>();
  for (const record of records) for (const entry of record.keys) leaseOfKey.set(entry.key, record);
  // The first time any watcher received each key's delete.
  const firstDelete = new Map<string, ObservedDelete>();
  for (const observed of deletes) {
    const known = firstDelete.get(observed.key);
    if (known === undefined || observed.receivedAtMs < known.receivedAtMs) firstDelete.set(observed.key, observed);
  }
  let expiries = 0;
  const revokedBefore = (record: LeaseRecord, time: number): boolean => record.revokeInvokedAtMs !== undefined && record.revokeInvokedAtMs <= time;
  const judge = (record: LeaseRecord, key: string, at: number, how: string): void => {
    if (revokedBefore(record, at)) return;
    expiries += 1;
    const earliest = earliestExpiryMs(record);
    if (at >= earliest) return;
    if (violations.length < 8) {
      violations.push({
        message: `lease ${record.id} (client ${record.client}, TTL ${record.ttlSeconds} s): ${key} ${how} at ${at}, ${earliest - at} ms before the earliest legal expiry ${earliest} (last acknowledged grant/renewal invoked at ${earliest - record.ttlSeconds * 1000})`,
      });
    }
  };
  for (const [key, observed] of firstDelete) {
    const record = leaseOfKey.get(key);
    if (record === undefined || record.acknowledgedInvokedAtMs.length === 0) continue;
    judge(record, key, observed.receivedAtMs, `was deleted at revision ${observed.revision}, a watcher received it`);
  }
  for (const record of records) {
    if (record.acknowledgedInvokedAtMs.length === 0) continue;
    const putDone = new Map(record.keys.map((entry) => [entry.key, entry] as const));
    for (const get of record.gets) {
      const entry = putDone.get(get.key);
      if (get.present || entry === undefined || !entry.putOk || entry.putCompletedAtMs >= get.invokedAtMs) continue;
      judge(record, get.key, get.completedAtMs, 'was read as absent');
    }
  }
  return { violations, expiriesObserved: expiries, leases: records.filter((record) => record.acknowledgedInvokedAtMs.length > 0).length };
}
