/**
 * Maintenance windows ([MW-1]..[MW-3]): schema validation of `mw` in stack command bodies, and the
 * pure open/next-opening computation across midnight, weekday boundaries and DST transitions.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  check,
  daysToMask,
  describeMaintenance,
  encode,
  isTimeZone,
  isWindowOpen,
  localTime,
  type MaintenancePolicy,
  MaintenanceSchema,
  maintenanceProblem,
  maskToDays,
  nextOpening,
  StackApplyBody,
  StackRemoveBody,
  StackRestartBody,
} from '../../protocol/src/index.js';

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
const WEEKDAYS = daysToMask([1, 2, 3, 4, 5]);

describe('[MW-1] schema', () => {
  const good: MaintenancePolicy[] = [
    { tz: 'Europe/Berlin', w: [{ d: WEEKDAYS, s: '02:00', e: '04:30' }] },
    { tz: 'UTC', w: [{ s: '23:00', e: '01:00' }] },
    { tz: 'America/New_York', w: [{ d: 64, s: '00:00', e: '00:00' }] },
    { tz: 'Asia/Kathmandu', w: Array.from({ length: 8 }, () => ({ s: '00:00', e: '00:01' })) },
  ];
  test.each(good)('accepts %j', (mw) => {
    expect(() => check(MaintenanceSchema, mw, 'mw')).not.toThrow();
    expect(maintenanceProblem(mw)).toBeUndefined();
    expect(() =>
      check(StackApplyBody, { stack: 'a', rev: 1, spec: new Uint8Array([0xa0]), mw, force: true }, 'b'),
    ).not.toThrow();
    expect(() => check(StackRemoveBody, { stack: 'a', mw }, 'b')).not.toThrow();
    expect(() => check(StackRestartBody, { stack: 'a', mw }, 'b')).not.toThrow();
  });

  const bad: [string, unknown, string][] = [
    ['unknown zone', { tz: 'Mars/Olympus', w: [{ s: '01:00', e: '02:00' }] }, '/tz'],
    ['empty zone', { tz: '', w: [{ s: '01:00', e: '02:00' }] }, '/tz'],
    ['no windows', { tz: 'UTC', w: [] }, '/w'],
    ['nine windows', { tz: 'UTC', w: Array.from({ length: 9 }, () => ({ s: '01:00', e: '02:00' })) }, '/w'],
    ['hour 24', { tz: 'UTC', w: [{ s: '24:00', e: '02:00' }] }, '/w/0/s'],
    ['no leading zero', { tz: 'UTC', w: [{ s: '1:00', e: '02:00' }] }, '/w/0/s'],
    ['minute 60', { tz: 'UTC', w: [{ s: '01:00', e: '02:60' }] }, '/w/0/e'],
    ['day mask 0', { tz: 'UTC', w: [{ d: 0, s: '01:00', e: '02:00' }] }, '/w/0/d'],
    ['day mask 128', { tz: 'UTC', w: [{ d: 128, s: '01:00', e: '02:00' }] }, '/w/0/d'],
    ['unknown key', { tz: 'UTC', w: [{ s: '01:00', e: '02:00', x: 1 }] }, '/w/0'],
    ['days as names', { tz: 'UTC', w: [{ d: ['mon'], s: '01:00', e: '02:00' }] }, '/w/0/d'],
  ];
  test.each(bad)('rejects %s as malformed, naming %s', (_what, mw, path) => {
    expect(() => check(MaintenanceSchema, mw, 'mw')).toThrow(/^malformed: mw \//);
    try {
      check(MaintenanceSchema, mw, 'mw');
    } catch (err) {
      expect((err as Error).message).toContain(path);
    }
    // maintenanceProblem (used by the controller's API) agrees, except on unknown keys (schema only)
    if (_what !== 'unknown key')
      expect(maintenanceProblem(mw as MaintenancePolicy)?.path.startsWith(path)).toBe(true);
  });

  test('force is only `true`', () => {
    expect(() => check(StackRestartBody, { stack: 'a', force: false }, 'stack.restart')).toThrow(/malformed/);
  });

  test('time zones are what Intl accepts', () => {
    expect(isTimeZone('Europe/Berlin')).toBe(true);
    expect(isTimeZone('Etc/GMT+5')).toBe(true);
    expect(isTimeZone('Nowhere/Never')).toBe(false);
    expect(isTimeZone(3)).toBe(false);
  });

  test('weekday masks', () => {
    expect(daysToMask([1, 2, 3, 4, 5])).toBe(31);
    expect(daysToMask([7])).toBe(64);
    expect(maskToDays(31)).toEqual([1, 2, 3, 4, 5]);
    expect(maskToDays(undefined)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(() => daysToMask([0])).toThrow(RangeError);
    expect(describeMaintenance({ tz: 'UTC', w: [{ d: 31, s: '02:00', e: '04:30' }] })).toBe(
      'Mon,Tue,Wed,Thu,Fri 02:00-04:30 UTC',
    );
  });
});

describe('[MW-2] open', () => {
  const berlin: MaintenancePolicy = { tz: 'Europe/Berlin', w: [{ d: WEEKDAYS, s: '02:00', e: '04:30' }] };
  const night: MaintenancePolicy = { tz: 'UTC', w: [{ d: daysToMask([5]), s: '22:00', e: '02:00' }] };
  const cases: [string, MaintenancePolicy, string, boolean][] = [
    // 2026-01-05 is a Monday; Berlin is UTC+1 in winter
    ['Mon 01:59 Berlin', berlin, '2026-01-05T00:59:00Z', false],
    ['Mon 02:00 Berlin', berlin, '2026-01-05T01:00:00Z', true],
    ['Mon 04:29 Berlin', berlin, '2026-01-05T03:29:59Z', true],
    ['Mon 04:30 Berlin (end is exclusive)', berlin, '2026-01-05T03:30:00Z', false],
    ['Sat 03:00 Berlin (not a listed day)', berlin, '2026-01-10T02:00:00Z', false],
    [
      'Sun 01:00 UTC, but Mon 02:00 Berlin? no: Mon 02:00 Berlin is Mon 01:00 UTC',
      berlin,
      '2026-01-04T01:00:00Z',
      false,
    ],
    // crossing midnight: starts Friday 22:00, ends Saturday 02:00
    ['Fri 21:59', night, '2026-01-09T21:59:00Z', false],
    ['Fri 22:00', night, '2026-01-09T22:00:00Z', true],
    ['Sat 01:59 (the day after a listed day)', night, '2026-01-10T01:59:00Z', true],
    ['Sat 02:00', night, '2026-01-10T02:00:00Z', false],
    ['Sat 22:30 (Saturday is not listed)', night, '2026-01-10T22:30:00Z', false],
    ['Fri 01:00 (Thursday is not listed)', night, '2026-01-09T01:00:00Z', false],
    // 24-hour window: the whole Sunday
    ['Sun 00:00', { tz: 'UTC', w: [{ d: 64, s: '00:00', e: '00:00' }] }, '2026-01-11T00:00:00Z', true],
    ['Sun 23:59', { tz: 'UTC', w: [{ d: 64, s: '00:00', e: '00:00' }] }, '2026-01-11T23:59:00Z', true],
    ['Mon 00:00', { tz: 'UTC', w: [{ d: 64, s: '00:00', e: '00:00' }] }, '2026-01-12T00:00:00Z', false],
  ];
  test.each(cases)('%s', (_what, p, when, open) => {
    expect(isWindowOpen(p, at(when))).toBe(open);
  });

  test('local time and offsets', () => {
    expect(localTime(at('2026-01-05T01:00:00Z'), 'Europe/Berlin')).toEqual({
      weekday: 1,
      minute: 120,
      offset: 60,
    });
    expect(localTime(at('2026-07-06T00:00:00Z'), 'Europe/Berlin').offset).toBe(120);
    expect(localTime(at('2026-01-05T00:00:00Z'), 'Asia/Kathmandu').offset).toBe(345);
    // a Sunday 23:30 in New York is Monday 04:30 UTC
    expect(localTime(at('2026-01-12T04:30:00Z'), 'America/New_York')).toMatchObject({
      weekday: 7,
      minute: 23 * 60 + 30,
    });
  });
});

describe('[MW-3] next opening', () => {
  const cases: [string, MaintenancePolicy, string, string][] = [
    [
      'already open: now',
      { tz: 'UTC', w: [{ s: '01:00', e: '03:00' }] },
      '2026-01-05T02:00:30Z',
      '2026-01-05T02:00:30.000Z',
    ],
    [
      'later the same day',
      { tz: 'Europe/Berlin', w: [{ s: '02:00', e: '04:30' }] },
      '2026-01-05T00:10:20Z',
      '2026-01-05T01:00:00.000Z',
    ],
    [
      'after the window: tomorrow',
      { tz: 'Europe/Berlin', w: [{ s: '02:00', e: '04:30' }] },
      '2026-01-05T04:00:00Z',
      '2026-01-06T01:00:00.000Z',
    ],
    [
      'weekdays only: Friday after the window -> Monday',
      { tz: 'Europe/Berlin', w: [{ d: WEEKDAYS, s: '02:00', e: '04:30' }] },
      '2026-01-09T12:00:00Z',
      '2026-01-12T01:00:00.000Z',
    ],
    [
      'crossing midnight, Sunday only, asked on Monday -> next Sunday 23:00',
      { tz: 'UTC', w: [{ d: 64, s: '23:00', e: '01:00' }] },
      '2026-01-05T01:30:00Z',
      '2026-01-11T23:00:00.000Z',
    ],
    [
      'crossing midnight: in its tail (Monday 00:30 after Sunday 23:00) it is open now',
      { tz: 'UTC', w: [{ d: 64, s: '23:00', e: '01:00' }] },
      '2026-01-12T00:30:00Z',
      '2026-01-12T00:30:00.000Z',
    ],
    [
      'the earliest of several windows',
      {
        tz: 'UTC',
        w: [
          { d: daysToMask([3]), s: '10:00', e: '11:00' },
          { d: daysToMask([2]), s: '18:00', e: '19:00' },
        ],
      },
      '2026-01-05T12:00:00Z',
      '2026-01-06T18:00:00.000Z',
    ],
    // Europe/Berlin springs forward on Sunday 2026-03-29 at 02:00 CET -> 03:00 CEST (01:00Z)
    [
      'DST spring: window inside the gap opens when the wall clock enters it (03:00 CEST)',
      { tz: 'Europe/Berlin', w: [{ s: '02:00', e: '04:00' }] },
      '2026-03-29T00:10:00Z',
      '2026-03-29T01:00:00.000Z',
    ],
    [
      'DST spring: a window that lies wholly in the gap does not open that day',
      { tz: 'Europe/Berlin', w: [{ s: '02:15', e: '02:45' }] },
      '2026-03-29T00:10:00Z',
      '2026-03-30T00:15:00.000Z',
    ],
    [
      'DST spring: a window after the gap opens at its wall time (04:00 CEST = 02:00Z)',
      { tz: 'Europe/Berlin', w: [{ s: '04:00', e: '05:00' }] },
      '2026-03-28T23:30:00Z',
      '2026-03-29T02:00:00.000Z',
    ],
    // Europe/Berlin falls back on Sunday 2026-10-25 at 03:00 CEST -> 02:00 CET (01:00Z)
    [
      'DST autumn: first pass of the repeated hour (02:30 CEST = 00:30Z)',
      { tz: 'Europe/Berlin', w: [{ s: '02:30', e: '02:45' }] },
      '2026-10-24T23:00:00Z',
      '2026-10-25T00:30:00.000Z',
    ],
    [
      'DST autumn: after the first pass, the second pass (02:30 CET = 01:30Z)',
      { tz: 'Europe/Berlin', w: [{ s: '02:30', e: '02:45' }] },
      '2026-10-25T00:50:00Z',
      '2026-10-25T01:30:00.000Z',
    ],
    [
      'DST autumn: a window after the fold opens at its wall time (04:00 CET = 03:00Z)',
      { tz: 'Europe/Berlin', w: [{ s: '04:00', e: '05:00' }] },
      '2026-10-24T23:00:00Z',
      '2026-10-25T03:00:00.000Z',
    ],
    [
      'US spring forward (2026-03-08 02:00 EST -> 03:00 EDT): 06:00 EDT = 10:00Z',
      { tz: 'America/New_York', w: [{ d: 64, s: '06:00', e: '07:00' }] },
      '2026-03-07T12:00:00Z',
      '2026-03-08T10:00:00.000Z',
    ],
    [
      'Kathmandu (+05:45): 02:00 local = 20:15Z the day before',
      { tz: 'Asia/Kathmandu', w: [{ s: '02:00', e: '03:00' }] },
      '2026-01-05T12:00:00Z',
      '2026-01-05T20:15:00.000Z',
    ],
  ];
  test.each(cases)('%s', (_what, p, from, want) => {
    const got = nextOpening(p, at(from));
    expect(iso(got)).toBe(want);
    // it is open then, and was not open a minute before (unless it was open at `from`)
    expect(isWindowOpen(p, got!)).toBe(true);
    if (got! > at(from)) expect(isWindowOpen(p, got! - 60_000)).toBe(false);
  });

  test('agrees with a minute-by-minute scan over two weeks across DST changes', () => {
    const policies: MaintenancePolicy[] = [
      { tz: 'Europe/Berlin', w: [{ d: 31, s: '02:00', e: '04:30' }] },
      { tz: 'Europe/Berlin', w: [{ d: 64, s: '23:30', e: '02:30' }] },
      { tz: 'America/New_York', w: [{ d: 1 | 64, s: '01:30', e: '03:00' }] },
      { tz: 'Australia/Lord_Howe', w: [{ s: '01:45', e: '02:15' }] },
    ];
    for (const p of policies) {
      for (const start of ['2026-03-27T00:00:00Z', '2026-10-23T00:00:00Z', '2026-04-03T00:00:00Z']) {
        // Reference: open or not for every minute of 4 + 8 days; next open minute by a backward pass.
        const t0 = at(start);
        const minutes = 12 * 1440;
        const next = new Array<number>(minutes + 1).fill(Number.POSITIVE_INFINITY);
        for (let i = minutes - 1; i >= 0; i--) {
          next[i] = isWindowOpen(p, t0 + i * 60_000) ? t0 + i * 60_000 : next[i + 1]!;
        }
        for (let i = 0; i < 4 * 1440; i += 7) {
          const t = t0 + i * 60_000;
          expect(iso(nextOpening(p, t)), `${p.tz} ${JSON.stringify(p.w)} from ${iso(t)}`).toBe(iso(next[i]));
        }
      }
    }
  }, 60_000);
});

describe('[MW-1] wire budget', () => {
  test('a weekday window in Europe/Berlin keeps the reference stack.apply within 700 bytes (DESIGN §7)', () => {
    const golden = JSON.parse(
      readFileSync(new URL('../fixtures/protocol/golden.json', import.meta.url), 'utf8'),
    ) as { commands: { name: string; hex: string }[] };
    const ref = golden.commands.find((c) => c.name === 'stack.apply')!;
    const refBytes = ref.hex.length / 2;
    const mw: MaintenancePolicy = { tz: 'Europe/Berlin', w: [{ d: WEEKDAYS, s: '02:00', e: '04:30' }] };
    // bytes the `mw` entry (key + value) and `force: true` add to the body map
    const mwBytes = encode({ mw }).length - 1;
    const forceBytes = encode({ force: true }).length - 1;
    expect(mwBytes).toBe(45);
    expect(forceBytes).toBe(7);
    // the golden test keeps 60 bytes for MQTT framing under 640; the window fits in the same budget
    expect(refBytes + mwBytes + forceBytes).toBeLessThan(640);
    console.info(
      `stack.apply reference ${refBytes} B; with mw ${refBytes + mwBytes} B; with mw+force ${refBytes + mwBytes + forceBytes} B`,
    );
  });
});
