/**
 * The independent Sparkplug B schema (test/fixtures/sparkplug/sparkplug_b.proto, written from the
 * Sparkplug 3.0 specification, loaded by protobufjs 7) agrees with the `sparkplug-payload` codec the
 * controller publishes with: every basic datatype, nulls, aliases, timestamps, seq — and the other
 * way round for what a host sends (NCMD). A field-number mistake on either side fails here.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  decodePayload,
  encodePayload,
  type OutMetric,
  toNumber,
} from '../../controller/src/sparkplug/payload.js';
import { decodeSparkplug, encodeNcmd, PROTO_FILE } from './helpers/decoder.js';

const TS = Date.UTC(2026, 0, 1, 12, 0, 0);

const SAMPLES: { metric: OutMetric; want: unknown }[] = [
  { metric: { name: 'i8', type: 'Int8', value: -5 }, want: -5 },
  { metric: { name: 'i16', type: 'Int16', value: -30_000 }, want: -30_000 },
  { metric: { name: 'i32', type: 'Int32', value: -2_000_000_000 }, want: -2_000_000_000 },
  { metric: { name: 'i64', type: 'Int64', value: -7 }, want: -7 },
  { metric: { name: 'i64big', type: 'Int64', value: 2 ** 52 + 3 }, want: 2 ** 52 + 3 },
  { metric: { name: 'u8', type: 'UInt8', value: 200 }, want: 200 },
  { metric: { name: 'u16', type: 'UInt16', value: 60_000 }, want: 60_000 },
  { metric: { name: 'u32', type: 'UInt32', value: 4_000_000_000 }, want: 4_000_000_000 },
  { metric: { name: 'u64', type: 'UInt64', value: 2 ** 40 }, want: 2 ** 40 },
  { metric: { name: 'f', type: 'Float', value: 1.5 }, want: 1.5 },
  { metric: { name: 'd', type: 'Double', value: Math.PI }, want: Math.PI },
  { metric: { name: 'b', type: 'Boolean', value: true }, want: true },
  { metric: { name: 's', type: 'String', value: 'héllo ✓' }, want: 'héllo ✓' },
  { metric: { name: 'dt', type: 'DateTime', value: TS }, want: TS },
  { metric: { name: 't', type: 'Text', value: 'long text' }, want: 'long text' },
  { metric: { name: 'n', type: 'Int64', value: null }, want: null },
  { metric: { name: 'ns', type: 'String', value: null }, want: null },
];

describe('independent Sparkplug B schema vs the sparkplug-payload codec', () => {
  it('the .proto is the Sparkplug 3.0 Payload (proto2, org.eclipse.tahu.protobuf)', () => {
    const text = readFileSync(PROTO_FILE, 'utf8');
    expect(text).toMatch(/syntax = "proto2";/);
    expect(text).toMatch(/package org\.eclipse\.tahu\.protobuf;/);
    expect(text).toMatch(/optional uint64 alias = 2;/);
    expect(text).toMatch(/bool boolean_value = 14;/);
  });

  it('every basic datatype, null, alias and timestamp round-trips from the codec to the independent decoder', () => {
    const metrics = SAMPLES.map((s, i) => ({ ...s.metric, alias: 100 + i, timestamp: TS + i }));
    const bytes = encodePayload({ timestamp: TS, seq: 255, metrics });
    const d = decodeSparkplug(bytes);
    expect(d.timestamp).toBe(TS);
    expect(d.seq).toBe(255);
    expect(d.metrics.length).toBe(SAMPLES.length);
    SAMPLES.forEach((s, i) => {
      const m = d.metrics[i]!;
      expect(m.name).toBe(s.metric.name);
      expect(m.alias).toBe(100 + i);
      expect(m.timestamp).toBe(TS + i);
      expect(m.datatype).toBe(s.metric.type);
      expect(m.isNull).toBe(s.want === null);
      expect(m.value, `${s.metric.name}`).toEqual(s.want);
    });
  });

  it('alias-only data metrics carry no name; an NDEATH-shaped payload has no seq', () => {
    const data = decodeSparkplug(
      encodePayload({
        timestamp: TS,
        seq: 0,
        metrics: [{ alias: 9, type: 'UInt32', value: 3, timestamp: TS }],
      }),
    );
    expect(data.seq).toBe(0);
    expect(data.metrics).toEqual([
      { alias: 9, timestamp: TS, datatype: 'UInt32', isNull: false, field: 'longValue', value: 3 },
    ]);
    const death = decodeSparkplug(
      encodePayload({ timestamp: TS, metrics: [{ name: 'bdSeq', type: 'Int64', value: 17 }] }),
    );
    expect(death.seq).toBeUndefined();
    expect(death.metrics).toEqual([
      { name: 'bdSeq', datatype: 'Int64', isNull: false, field: 'longValue', value: 17 },
    ]);
  });

  it('an NCMD encoded with the independent schema decodes in the edge node (by name and by alias)', () => {
    const p = decodePayload(
      encodeNcmd(
        [
          { name: 'Node Control/Rebirth', boolean: true },
          { alias: 2, boolean: false },
        ],
        TS,
      ),
    );
    expect(toNumber(p.timestamp)).toBe(TS);
    expect(p.metrics?.[0]).toMatchObject({ name: 'Node Control/Rebirth', type: 'Boolean', value: true });
    expect(toNumber(p.metrics?.[1]?.alias)).toBe(2);
    expect(p.metrics?.[1]?.value).toBe(false);
  });
});
