/**
 * Who a connection is. Identity comes from the client certificate (CN = name, OU = role), from a
 * password user (`role:name`), or — on a loopback plain listener with the dev-only
 * `insecureTrustClientId` flag — from what the client claims.
 *
 * Client-id rule (DESIGN §2, documented in broker/README.md):
 * - agent: client id = CN = site id, matching SITE_ID_PATTERN. Nothing else.
 * - controller, scada, admin: client id = CN, or `CN.suffix` (suffix `[a-z0-9_-]{1,32}`) so one identity
 *   may hold several sessions (e.g. `controller.ingest`). `.` is not allowed in names or site ids,
 *   so no identity can pick a client id that belongs to another identity and take its session over.
 */
import { SITE_ID_PATTERN } from '../../protocol/src/index.js';

export const ROLES = ['agent', 'controller', 'scada', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}

/** Names of every identity (CN, user name) share the site-id grammar: one safe topic level, no dots. */
export const NAME_PATTERN = SITE_ID_PATTERN;
const SUFFIX_PATTERN = /^[a-z0-9_-]{1,32}$/;

export type AuthMethod = 'certificate' | 'password' | 'insecure';

export interface Identity {
  readonly role: Role;
  readonly name: string;
  readonly clientId: string;
  readonly method: AuthMethod;
  /** Certificate serial (upper-case hex, no leading zeros) when authenticated by certificate. */
  readonly serial?: string;
}

/** True when `clientId` is one the identity (role, name) may use. */
export function clientIdAllowed(role: Role, name: string, clientId: string): boolean {
  if (!NAME_PATTERN.test(name)) return false;
  if (clientId === name) return true;
  if (role === 'agent') return false;
  if (!clientId.startsWith(`${name}.`)) return false;
  return SUFFIX_PATTERN.test(clientId.slice(name.length + 1));
}

/** Parses `role:name` (password users and insecure dev clients). */
export function parseUsername(username: string): { role: Role; name: string } | undefined {
  const i = username.indexOf(':');
  if (i < 0) return undefined;
  const role = username.slice(0, i);
  const name = username.slice(i + 1);
  if (!isRole(role) || !NAME_PATTERN.test(name)) return undefined;
  return { role, name };
}

export function formatUsername(role: Role, name: string): string {
  return `${role}:${name}`;
}

/** Upper-case hex without separators or leading zeros (how serials are compared everywhere). */
export function normaliseSerial(s: string): string {
  return s
    .replace(/[:\s]/g, '')
    .toUpperCase()
    .replace(/^0+(?=.)/, '');
}
