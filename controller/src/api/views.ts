/** Store records → API representations (ISO times, hex ids, ages in seconds). */
import type { AckRow, CommandSummary } from '../store/commands.js';
import type { Site } from '../store/sites.js';
import type { Revision } from '../store/stacks.js';

export const iso = (ms: number): string => new Date(ms).toISOString();
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));
export const hex = (b: Uint8Array | null): string | null =>
  b === null ? null : Buffer.from(b).toString('hex');
const age = (now: number, t: number | null): number | null =>
  t === null ? null : Math.max(0, (now - t) / 1000);

/**
 * `staleMs`: a site whose status says online but that has been silent longer than this is reported
 * offline and `stale` (0: never; [OUT-9]).
 */
export function siteView(s: Site, now: number, staleMs = 0) {
  const silentFor = now - (s.lastContact ?? s.enrolledAt);
  const stale = staleMs > 0 && s.online === true && silentFor > staleMs;
  return {
    id: s.id,
    labels: s.labels,
    groups: s.groups,
    enrolledAt: iso(s.enrolledAt),
    uplinkKey: Buffer.from(s.uplinkPub).toString('base64'),
    online: stale ? false : s.online,
    stale,
    lastContact: isoOrNull(s.lastContact),
    age: age(now, s.lastContact),
    status: s.status,
    statusAge: age(now, s.statusAt),
    state: s.state,
    stateAge: age(now, s.stateAt),
    seq: { allocated: s.seqAllocated, issued: s.seqIssued },
  };
}

export function commandView(c: CommandSummary) {
  return {
    site: c.site,
    seq: c.seq,
    id: hex(c.id)!,
    type: c.type,
    stack: c.stack,
    rev: c.rev,
    deployment: c.deployment,
    status: c.status,
    reason: c.reason,
    prev: c.prev,
    ref: hex(c.ref),
    specDigest: hex(c.spec_digest),
    createdAt: iso(c.created_at),
    createdBy: c.created_by,
    expiresAt: iso(c.expires_at * 1000),
    issuedAt: isoOrNull(c.issued_at),
    lastSentAt: isoOrNull(c.last_sent_at),
    attempts: c.attempts,
    ackedAt: isoOrNull(c.acked_at),
    doneAt: isoOrNull(c.done_at),
    supersededBy: c.superseded_by,
  };
}

export function ackView(a: AckRow) {
  return {
    n: a.n,
    site: a.site,
    useq: a.useq,
    at: iso(a.at * 1000),
    st: a.st,
    seq: a.seq,
    id: hex(a.cmd_id),
    ref: hex(a.ref),
    rc: a.rc,
    msg: a.msg,
    matched: a.matched === 1,
    receivedAt: iso(a.received_at),
  };
}

export function revisionView(r: Revision) {
  return {
    stack: r.stack,
    rev: r.rev,
    digest: hex(r.digest)!,
    composeDigest: hex(r.composeDigest)!,
    compressed: r.z,
    specBytes: r.spec.length,
    critical: r.critical,
    allowTags: r.allowTags,
    createdBy: r.createdBy,
    createdAt: iso(r.createdAt),
  };
}
