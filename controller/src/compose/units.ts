/**
 * Small Compose value grammars: durations (`1m30s`), byte sizes (`64m`), CPU counts (`0.5`) and the
 * shell-like word splitting Compose applies to string `command` / `entrypoint`.
 */

const DURATION_PART = /(\d+(?:\.\d+)?)(us|ms|s|m|h)/y;
const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a Compose duration (`30s`, `1m30s`, `1h`, `500ms`) to milliseconds; undefined if invalid. */
export function parseDurationMs(s: string): number | undefined {
  if (s.length === 0 || s.length > 64) return undefined;
  DURATION_PART.lastIndex = 0;
  let total = 0;
  while (DURATION_PART.lastIndex < s.length) {
    const m = DURATION_PART.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
  }
  return Math.round(total * 1000) / 1000;
}

const BYTE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
};

/** Parses a Compose byte size (`64m`, `1g`, `512kb`, or an integer) to bytes; undefined if invalid. */
export function parseBytes(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v > 0 ? v : undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(v.trim());
  if (!m) return undefined;
  const unit = BYTE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/** Parses a CPU count (`0.5`, `2`, or a number) to millicores; undefined if invalid. */
export function parseCpus(v: string | number): number | undefined {
  const n = typeof v === 'number' ? v : /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : Number.NaN;
  if (!Number.isFinite(n)) return undefined;
  const milli = Math.round(n * 1000);
  return milli >= 1 && milli <= 1_000_000 ? milli : undefined;
}

/**
 * Splits a command string into words the way a POSIX shell would without expansion: whitespace
 * separates, single quotes are literal, double quotes allow `\"` and `\\`, a backslash outside quotes
 * escapes the next character. Returns undefined for an unterminated quote or a trailing backslash.
 */
export function shellSplit(s: string): string[] | undefined {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) return undefined;
      cur += s.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < s.length && s[j] !== '"'; j++) {
        if (s[j] === '\\' && (s[j + 1] === '"' || s[j + 1] === '\\')) j++;
        cur += s[j];
      }
      if (j >= s.length) return undefined;
      i = j;
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 >= s.length) return undefined;
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}
