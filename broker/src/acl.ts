/**
 * Per-identity access control, default deny (DESIGN §5). Pure: decisions over (identity, topic).
 * Topics are built with the protocol's `Topics` and parsed with `parseTopic`; filters are matched
 * level by level against the few shapes each role may use, so no wildcard can reach another site.
 *
 * | role       | publish                                        | subscribe / read                                   |
 * | ---------- | ---------------------------------------------- | -------------------------------------------------- |
 * | agent      | own site's ack, state, status (retain: status) | own site's cmd, exactly                            |
 * | controller | cmd of any site, rollout/+/status,             | site/{+,id}/{ack,state,status}, rollout/{+,id}/     |
 * |            | controller/status, Sparkplug node/device       | status, controller/status, Sparkplug NCMD/{node}   |
 * |            | births, data and deaths (never retained)       | and STATE/{host or +}                              |
 * | scada      | nothing                                        | site/{+,id}/status, rollout/{+,id}/status,          |
 * |            |                                                | controller/status, spBv1.0/... (Sparkplug B)       |
 * | admin      | anything but $SYS                              | anything                                           |
 *
 * Last wills: an agent's must be its own status topic, the controller's controller/status or a
 * Sparkplug NDEATH (the edge node's death certificate); SCADA may not have one. Retained messages only on status topics (a retained command would replay forever).
 */
import {
  parseTopic,
  SITE_CHANNELS,
  SITE_ID_PATTERN,
  type SiteChannel,
  Topics,
} from '../../protocol/src/index.js';
import type { Identity } from './identity.js';
import type { RejectReason } from './reasons.js';

export type Decision =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: RejectReason; readonly detail: string };

const OK: Decision = Object.freeze({ ok: true });
const deny = (reason: RejectReason, detail: string): Decision => ({ ok: false, reason, detail });

export const SPARKPLUG_NAMESPACE = 'spBv1.0';

export interface AclLimits {
  readonly maxTopicLength: number;
  readonly maxTopicLevels: number;
}

const CONTROLLER_READS: readonly SiteChannel[] = ['ack', 'state', 'status'];

/** A concrete Sparkplug level: non-empty, no wildcard, no separator. */
const SP_LEVEL = /^[^+#/]{1,128}$/;
const SP_NODE_MESSAGES = ['NBIRTH', 'NDEATH', 'NDATA'];
const SP_DEVICE_MESSAGES = ['DBIRTH', 'DDATA', 'DDEATH'];

/**
 * What the controller (acting as Sparkplug B edge nodes) may publish: node and device births, data and
 * deaths in any group, never STATE (that is the host application's) and never commands.
 */
function sparkplugEdgePublish(topic: string): boolean {
  const l = topic.split('/');
  if (l[0] !== SPARKPLUG_NAMESPACE || !l.slice(1).every((x) => SP_LEVEL.test(x))) return false;
  if (l.length === 4) return SP_NODE_MESSAGES.includes(l[2]!);
  if (l.length === 5) return SP_DEVICE_MESSAGES.includes(l[2]!);
  return false;
}

/** What the controller's edge nodes may read: NCMD to a node (rebirth) and host STATE. */
function sparkplugEdgeRead(topicOrFilter: string, filter: boolean): boolean {
  const l = topicOrFilter.split('/');
  if (l[0] !== SPARKPLUG_NAMESPACE) return false;
  if (l.length === 3 && l[1] === 'STATE') return SP_LEVEL.test(l[2]!) || (filter && l[2] === '+');
  return l.length === 4 && SP_LEVEL.test(l[1]!) && l[2] === 'NCMD' && SP_LEVEL.test(l[3]!);
}
const AGENT_WRITES: readonly SiteChannel[] = ['ack', 'state', 'status'];

export class Acl {
  readonly topics: Topics;
  readonly #limits: AclLimits;

  constructor(prefix: string, limits: AclLimits) {
    this.topics = new Topics(prefix);
    this.#limits = limits;
  }

  /** Length and depth limits for any topic or filter. */
  shape(topic: string): Decision {
    if (topic.length > this.#limits.maxTopicLength) {
      return deny('topic-too-long', `${topic.length} > ${this.#limits.maxTopicLength} characters`);
    }
    let levels = 1;
    for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) levels++;
    if (levels > this.#limits.maxTopicLevels) {
      return deny('topic-too-deep', `${levels} > ${this.#limits.maxTopicLevels} levels`);
    }
    return OK;
  }

  /** May `id` publish to the concrete topic `topic` (with `retain`)? */
  canPublish(id: Identity, topic: string, retain = false): Decision {
    const shape = this.shape(topic);
    if (!shape.ok) return shape;
    if (topic.startsWith('$')) return deny('acl-publish', '$ topics are reserved');
    if (id.role === 'admin') return OK;
    if (id.role === 'scada') return deny('acl-publish', 'scada is read-only');
    if (id.role === 'controller' && topic.startsWith(`${SPARKPLUG_NAMESPACE}/`)) {
      if (!sparkplugEdgePublish(topic)) return deny('acl-publish', 'not a Sparkplug edge-node topic');
      return retain ? deny('acl-publish', 'Sparkplug messages may not be retained') : OK;
    }
    const t = parseTopic(topic, this.topics.prefix);
    if (!t) return deny('acl-publish', 'not an Outpost topic');
    if (id.role === 'agent') {
      if (t.kind !== 'site' || t.site !== id.name) return deny('acl-publish', "not this site's topic");
      if (!AGENT_WRITES.includes(t.channel))
        return deny('acl-publish', `agents may not publish ${t.channel}`);
      if (retain && t.channel !== 'status') return deny('acl-publish', 'retain is only allowed on status');
      return OK;
    }
    // controller
    if (t.kind === 'site') {
      if (t.channel !== 'cmd') return deny('acl-publish', `the controller may not publish ${t.channel}`);
      if (retain) return deny('acl-publish', 'commands may not be retained');
      return OK;
    }
    return OK; // rollout/{id}/status, controller/status
  }

  /** May `id` receive a message published on the concrete topic `topic`? */
  canRead(id: Identity, topic: string): Decision {
    if (id.role === 'admin') return OK;
    if (topic.startsWith('$')) return deny('acl-forward', '$ topics are for admin');
    if (
      id.role === 'scada' &&
      (topic === SPARKPLUG_NAMESPACE || topic.startsWith(`${SPARKPLUG_NAMESPACE}/`))
    ) {
      return OK;
    }
    if (id.role === 'controller' && topic.startsWith(`${SPARKPLUG_NAMESPACE}/`)) {
      return sparkplugEdgeRead(topic, false) ? OK : deny('acl-forward', 'not Sparkplug NCMD or STATE');
    }
    const t = parseTopic(topic, this.topics.prefix);
    if (!t) return deny('acl-forward', 'not an Outpost topic');
    switch (id.role) {
      case 'agent':
        return t.kind === 'site' && t.site === id.name && t.channel === 'cmd'
          ? OK
          : deny('acl-forward', "not this site's cmd");
      case 'controller':
        return t.kind !== 'site' || CONTROLLER_READS.includes(t.channel)
          ? OK
          : deny('acl-forward', `the controller does not read ${t.channel}`);
      case 'scada':
        return t.kind !== 'site' || t.channel === 'status'
          ? OK
          : deny('acl-forward', 'scada reads status only');
    }
  }

  /** May `id` subscribe with `filter`? Wildcards are allowed only where they cannot widen the role. */
  canSubscribe(id: Identity, filter: string): Decision {
    const shape = this.shape(filter);
    if (!shape.ok) return shape;
    if (id.role === 'admin') return OK;
    if (filter.startsWith('$'))
      return deny('acl-subscribe', '$ topics and shared subscriptions are for admin');
    if (id.role === 'agent') {
      return filter === this.topics.cmd(id.name)
        ? OK
        : deny('acl-subscribe', 'agents subscribe to their own cmd only');
    }
    if (id.role === 'scada' && filter.startsWith(`${SPARKPLUG_NAMESPACE}/`)) return OK;
    if (id.role === 'controller' && filter.startsWith(`${SPARKPLUG_NAMESPACE}/`)) {
      return sparkplugEdgeRead(filter, true)
        ? OK
        : deny('acl-subscribe', 'controller reads Sparkplug NCMD and STATE only');
    }
    const levels = this.#levelsUnderPrefix(filter);
    if (!levels) return deny('acl-subscribe', 'not under the Outpost prefix');
    const [kind, a, b, ...extra] = levels;
    if (extra.length > 0) return deny('acl-subscribe', 'too many levels');
    const idOrPlus = (v: string | undefined) => v === '+' || (v !== undefined && SITE_ID_PATTERN.test(v));
    if (kind === 'controller' && a === 'status' && b === undefined) return OK;
    if (kind === 'rollout' && idOrPlus(a) && b === 'status') return OK;
    if (
      kind === 'site' &&
      idOrPlus(a) &&
      b !== undefined &&
      (SITE_CHANNELS as readonly string[]).includes(b)
    ) {
      const allowed: readonly string[] = id.role === 'controller' ? CONTROLLER_READS : ['status'];
      if (allowed.includes(b)) return OK;
    }
    return deny('acl-subscribe', `${id.role} may not read this filter`);
  }

  /** Is `topic` an acceptable last-will topic for `id`? */
  willAllowed(id: Identity, topic: string, retain: boolean): Decision {
    const shape = this.shape(topic);
    if (!shape.ok) return shape;
    switch (id.role) {
      case 'agent':
        return topic === this.topics.status(id.name)
          ? OK
          : deny('will-topic', "an agent's will must be its status");
      case 'controller': {
        const l = topic.split('/');
        const ndeath = sparkplugEdgePublish(topic) && l[2] === 'NDEATH' && !retain;
        return topic === this.topics.controllerStatus() || ndeath
          ? OK
          : deny('will-topic', "the controller's will must be controller/status or a Sparkplug NDEATH");
      }
      case 'scada':
        return deny('will-topic', 'scada may not publish, not even a will');
      case 'admin': {
        const d = this.canPublish(id, topic, retain);
        return d.ok ? d : deny('will-topic', d.detail);
      }
    }
  }

  /** Levels of a filter below the prefix, or undefined if it is not under the prefix. */
  #levelsUnderPrefix(filter: string): string[] | undefined {
    const p = `${this.topics.prefix}/`;
    return filter.startsWith(p) ? filter.slice(p.length).split('/') : undefined;
  }
}
