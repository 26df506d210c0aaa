/**
 * Topic layout (SPEC [TOP-1]..[TOP-4]). Features never concatenate topic strings: they call these
 * builders, and parse inbound topics with `parseTopic`.
 */
import { ProtocolError } from './reasons.js';

export const DEFAULT_PREFIX = 'outpost/v1';

/** Site ids (= certificate CN = MQTT client id): [TOP-2]. */
export const SITE_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Rollout ids share the same grammar so they are safe as a topic level. */
export const ROLLOUT_ID_PATTERN = SITE_ID_PATTERN;

export function isSiteId(v: unknown): v is string {
  return typeof v === 'string' && SITE_ID_PATTERN.test(v);
}

export function assertSiteId(v: unknown): string {
  if (!isSiteId(v)) throw new ProtocolError('malformed', `invalid site id ${JSON.stringify(v)}`);
  return v;
}

const PREFIX_LEVEL = /^[A-Za-z0-9_.-]{1,64}$/;

/** A prefix is 1..4 plain levels: no wildcards, no empty levels, no leading `$`. */
export function assertPrefix(prefix: string): string {
  const levels = prefix.split('/');
  if (levels.length > 4 || !levels.every((l) => PREFIX_LEVEL.test(l))) {
    throw new ProtocolError('malformed', `invalid topic prefix ${JSON.stringify(prefix)}`);
  }
  return prefix;
}

export type SiteChannel = 'cmd' | 'ack' | 'state' | 'status';
export const SITE_CHANNELS: readonly SiteChannel[] = ['cmd', 'ack', 'state', 'status'];

/** What travels on each topic kind (the typed topic → payload map). */
export interface TopicPayloads {
  cmd: 'cose-sign1'; // signed command envelope (CBOR)
  ack: 'cose-sign1'; // signed ack (CBOR)
  state: 'cose-sign1'; // signed state snapshot or delta (CBOR)
  status: 'json'; // retained SiteStatus, UTF-8 JSON
  rollout: 'json'; // retained RolloutStatus, UTF-8 JSON
  controller: 'json'; // retained ControllerStatus, UTF-8 JSON
}

export class Topics {
  readonly prefix: string;
  constructor(prefix: string = DEFAULT_PREFIX) {
    this.prefix = assertPrefix(prefix);
  }
  site(site: string, channel: SiteChannel): string {
    return `${this.prefix}/site/${assertSiteId(site)}/${channel}`;
  }
  cmd(site: string): string {
    return this.site(site, 'cmd');
  }
  ack(site: string): string {
    return this.site(site, 'ack');
  }
  state(site: string): string {
    return this.site(site, 'state');
  }
  status(site: string): string {
    return this.site(site, 'status');
  }
  rolloutStatus(id: string): string {
    if (!ROLLOUT_ID_PATTERN.test(id)) throw new ProtocolError('malformed', `invalid rollout id ${id}`);
    return `${this.prefix}/rollout/${id}/status`;
  }
  controllerStatus(): string {
    return `${this.prefix}/controller/status`;
  }
  /** Subscription filters (the controller subscribes to every site's uplink channel). */
  allSites(channel: SiteChannel): string {
    return `${this.prefix}/site/+/${channel}`;
  }
  allSiteStatus(): string {
    return this.allSites('status');
  }
  allRolloutStatus(): string {
    return `${this.prefix}/rollout/+/status`;
  }
}

export type ParsedTopic =
  | { kind: 'site'; site: string; channel: SiteChannel }
  | { kind: 'rollout'; rollout: string }
  | { kind: 'controller' };

/** Parses a concrete (wildcard-free) topic under `prefix`; returns undefined for anything else. */
export function parseTopic(topic: string, prefix: string = DEFAULT_PREFIX): ParsedTopic | undefined {
  if (!topic.startsWith(`${prefix}/`)) return undefined;
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest.length === 3 && rest[0] === 'site') {
    const site = rest[1]!;
    const channel = rest[2] as SiteChannel;
    if (!isSiteId(site) || !SITE_CHANNELS.includes(channel)) return undefined;
    return { kind: 'site', site, channel };
  }
  if (
    rest.length === 3 &&
    rest[0] === 'rollout' &&
    rest[2] === 'status' &&
    ROLLOUT_ID_PATTERN.test(rest[1]!)
  ) {
    return { kind: 'rollout', rollout: rest[1]! };
  }
  if (rest.length === 2 && rest[0] === 'controller' && rest[1] === 'status') return { kind: 'controller' };
  return undefined;
}
