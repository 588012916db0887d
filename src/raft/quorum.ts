// Quorum arithmetic for majority and joint configurations: the highest index
// a quorum has acknowledged, and the outcome of a vote. A joint configuration
// (incoming + outgoing voters) needs a majority of each.

export const VoteResult = { Pending: 0, Lost: 1, Won: 2 } as const;
export type VoteResult = (typeof VoteResult)[keyof typeof VoteResult];

/** Highest index acknowledged by a majority of `voters` (Infinity for an empty set). */
export function majorityCommitted(voters: readonly number[], acked: (id: number) => number): number {
  const n = voters.length;
  if (n === 0) return Number.POSITIVE_INFINITY; // an empty config does not constrain a joint one
  const values = new Array<number>(n);
  for (let i = 0; i < n; i++) values[i] = acked(voters[i]!);
  values.sort((a, b) => b - a);
  return values[Math.floor(n / 2)]!;
}

export function jointCommitted(incoming: readonly number[], outgoing: readonly number[], acked: (id: number) => number): number {
  const committed = Math.min(majorityCommitted(incoming, acked), majorityCommitted(outgoing, acked));
  return committed === Number.POSITIVE_INFINITY ? 0 : committed;
}

export function majorityVote(voters: readonly number[], votes: ReadonlyMap<number, boolean>): VoteResult {
  if (voters.length === 0) return VoteResult.Won;
  let granted = 0;
  let missing = 0;
  for (const id of voters) {
    const vote = votes.get(id);
    if (vote === undefined) missing += 1;
    else if (vote) granted += 1;
  }
  const quorum = Math.floor(voters.length / 2) + 1;
  if (granted >= quorum) return VoteResult.Won;
  if (granted + missing >= quorum) return VoteResult.Pending;
  return VoteResult.Lost;
}

export function jointVote(incoming: readonly number[], outgoing: readonly number[], votes: ReadonlyMap<number, boolean>): VoteResult {
  const a = majorityVote(incoming, votes);
  const b = majorityVote(outgoing, votes);
  if (a === b) return a;
  if (a === VoteResult.Lost || b === VoteResult.Lost) return VoteResult.Lost;
  return VoteResult.Pending;
}
