/**
 * Maintenance windows (SPEC [MW-1]..[MW-6]): when a stack command may run at a site, judged in the
 * site's local time zone. Pure functions, no I/O; time zones come from the runtime's IANA database
 * through `Intl.DateTimeFormat`.
 *
 * Wire form (`mw` in a stack command body, compact):
 *   `{tz: "Europe/Berlin", w: [{d?: 31, s: "02:00", e: "04:30"}]}`
 * - `d` is a bitmask of ISO weekdays (bit 0 = Monday … bit 6 = Sunday; absent = every day) naming the
 *   local day a window *starts* on;
 * - `s`/`e` are local wall-clock times `HH:MM`; `e` before `s` crosses midnight (ends the next day),
 *   `e` = `s` is a 24-hour window (`00:00`-`00:00`: the whole listed day).
 * - A window is open at instant t when the local wall clock at t is in [s, e) on a listed day (or, for
 *   a window crossing midnight, in [00:00, e) on the day after a listed day). Wall-clock semantics
 *   across DST: a window inside the spring-forward gap does not open that day; a window inside the
 *   repeated autumn hour is open during both passes.
 */
import { ProtocolError } from './reasons.js';

export interface MaintenanceWindow {
  /** ISO weekday bitmask (bit 0 Monday … bit 6 Sunday), 1..127; absent: every day. */
  d?: number;
  /** Local start, `HH:MM`. */
  s: string;
  /** Local end, `HH:MM` (at or before `s`: the next day). */
  e: string;
}

export interface MaintenancePolicy {
  /** IANA time zone of the site, e.g. `Europe/Berlin`. */
  tz: string;
  w: MaintenanceWindow[];
}

export const MAX_WINDOWS = 8;
export const HHMM_PATTERN = '^([01][0-9]|2[0-3]):[0-5][0-9]$';
const HHMM = new RegExp(HHMM_PATTERN);
export const ALL_DAYS = 0x7f;
const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
    });
    if (formatters.size > 256) formatters.clear();
    formatters.set(tz, f);
  }
  return f;
}

/** True when the runtime's Intl accepts `tz` as a time zone. */
export function isTimeZone(tz: unknown): tz is string {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64) return false;
  try {
    formatter(tz);
    return true;
  } catch {
    return false;
  }
}

const minutesOf = (hhmm: string): number => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * Every check of [MW-1] (the schema in schemas.ts expresses the same, for wire payloads): a time zone
 * Intl accepts, 1..8 windows, `HH:MM` times, a day mask 1..127. The first problem as `{path, message}`.
 */
export function maintenanceProblem(p: MaintenancePolicy): { path: string; message: string } | undefined {
  if (!isTimeZone(p.tz)) return { path: '/tz', message: `unknown time zone ${JSON.stringify(p.tz)}` };
  if (p.w.length === 0) return { path: '/w', message: 'at least one window' };
  if (p.w.length > MAX_WINDOWS) return { path: '/w', message: `at most ${MAX_WINDOWS} windows` };
  for (const [i, w] of p.w.entries()) {
    if (!HHMM.test(w.s)) return { path: `/w/${i}/s`, message: 'expected HH:MM (00:00..23:59)' };
    if (!HHMM.test(w.e)) return { path: `/w/${i}/e`, message: 'expected HH:MM (00:00..23:59)' };
    if (w.d !== undefined && (!Number.isInteger(w.d) || w.d < 1 || w.d > ALL_DAYS))
      return { path: `/w/${i}/d`, message: 'weekday bitmask 1..127 (bit 0 = Monday)' };
  }
  return undefined;
}

/** Throws ProtocolError('malformed') when the policy is not usable ([MW-1]). */
export function assertMaintenance(p: MaintenancePolicy, what = 'mw'): void {
  const bad = maintenanceProblem(p);
  if (bad) throw new ProtocolError('malformed', `${what}${bad.path}: ${bad.message}`);
}

/** ISO weekdays (1 = Monday … 7 = Sunday) to the wire bitmask. */
export function daysToMask(days: readonly number[]): number {
  let m = 0;
  for (const d of days) {
    if (!Number.isInteger(d) || d < 1 || d > 7) throw new RangeError(`weekday ${d} is not 1..7`);
    m |= 1 << (d - 1);
  }
  return m;
}

/** The wire bitmask to ISO weekdays, ascending. */
export function maskToDays(mask: number | undefined): number[] {
  const m = mask ?? ALL_DAYS;
  return [1, 2, 3, 4, 5, 6, 7].filter((d) => (m & (1 << (d - 1))) !== 0);
}

/** `mon`..`sun` or 1..7 to an ISO weekday; undefined when neither. */
export function parseWeekday(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 7) return v;
  if (typeof v === 'string') {
    const i = DAY_NAMES.indexOf(v.toLowerCase().slice(0, 3) as (typeof DAY_NAMES)[number]);
    return i >= 0 ? i + 1 : undefined;
  }
  return undefined;
}

export interface LocalTime {
  /** ISO weekday, 1 = Monday … 7 = Sunday. */
  readonly weekday: number;
  /** Minutes since local midnight. */
  readonly minute: number;
  /** UTC offset in minutes at that instant. */
  readonly offset: number;
}

/** The wall clock of `tz` at `ms` (to the minute). */
export function localTime(ms: number, tz: string): LocalTime {
  const parts = formatter(tz).formatToParts(new Date(ms));
  const get = (t: Intl.DateTimeFormatPartTypes) => Number(parts.find((p) => p.type === t)?.value);
  const y = get('year');
  const mo = get('month');
  const d = get('day');
  const h = get('hour');
  const mi = get('minute');
  const asUtc = Date.UTC(y, mo - 1, d, h, mi);
  const utcDay = new Date(Date.UTC(y, mo - 1, d)).getUTCDay();
  return {
    weekday: utcDay === 0 ? 7 : utcDay,
    minute: h * 60 + mi,
    offset: Math.round((asUtc - Math.floor(ms / 60_000) * 60_000) / 60_000),
  };
}

const hasDay = (mask: number | undefined, weekday: number) =>
  ((mask ?? ALL_DAYS) & (1 << (weekday - 1))) !== 0;
const prevDay = (weekday: number) => (weekday === 1 ? 7 : weekday - 1);

function openAt(w: MaintenanceWindow, t: LocalTime): boolean {
  const s = minutesOf(w.s);
  const e = minutesOf(w.e);
  if (s < e) return hasDay(w.d, t.weekday) && t.minute >= s && t.minute < e;
  return (hasDay(w.d, t.weekday) && t.minute >= s) || (hasDay(w.d, prevDay(t.weekday)) && t.minute < e);
}

/** True when some window of `p` is open at `ms` ([MW-2]). */
export function isWindowOpen(p: MaintenancePolicy, ms: number): boolean {
  const t = localTime(ms, p.tz);
  return p.w.some((w) => openAt(w, t));
}

/** Wall-clock minutes from `t` until the next start of `w` (≥ 1). */
function minutesToStart(w: MaintenanceWindow, t: LocalTime): number {
  const s = minutesOf(w.s);
  for (let k = 0; k <= 7; k++) {
    const wd = ((t.weekday - 1 + k) % 7) + 1;
    const delta = k * 1440 + s - t.minute;
    if (delta >= 1 && hasDay(w.d, wd)) return delta;
  }
  return 7 * 1440;
}

/** Horizon of the search: windows repeat weekly; two weeks also covers a window lost to a DST gap. */
const HORIZON_MS = 15 * 24 * 3600 * 1000;

/**
 * The first instant at or after `ms` (to the minute) when a window of `p` is open ([MW-3]), or
 * undefined when none opens within two weeks (impossible for a valid policy). Steps from one window
 * start to the next in wall-clock minutes; when the UTC offset changes in between (DST), it stops at
 * the first minute of the new offset and looks again, so a transition neither skips nor invents one.
 */
export function nextOpening(p: MaintenancePolicy, ms: number): number | undefined {
  let t = ms;
  const end = ms + HORIZON_MS;
  while (t <= end) {
    const local = localTime(t, p.tz);
    if (p.w.some((w) => openAt(w, local))) return t;
    const wall = Math.min(...p.w.map((w) => minutesToStart(w, local)));
    // Land on the start minute exactly (drop the seconds of `t`).
    const base = Math.floor(t / 60_000) * 60_000;
    let next = base + wall * 60_000;
    if (localTime(next, p.tz).offset !== local.offset) {
      // A UTC offset change (DST) lies in between: stop at its first minute and look again from there.
      let lo = base;
      while (next - lo > 60_000) {
        const mid = lo + Math.floor((next - lo) / 120_000) * 60_000;
        if (localTime(mid, p.tz).offset === local.offset) lo = mid;
        else next = mid;
      }
    }
    t = next > t ? next : base + 60_000;
  }
  return undefined;
}

/** Human form of a window list for messages: `Mon-Fri 02:00-04:30 Europe/Berlin`. */
export function describeMaintenance(p: MaintenancePolicy): string {
  const names = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
  const ws = p.w.map((w) => {
    const days = maskToDays(w.d);
    const d = days.length === 7 ? 'daily' : days.map((x) => names[x - 1]).join(',');
    return `${d} ${w.s}-${w.e}`;
  });
  return `${ws.join('; ')} ${p.tz}`;
}
