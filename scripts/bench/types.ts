/** A benchmark section: rows of figures with the target they are judged against. */
export interface Row {
  readonly name: string;
  /** Median over runs. */
  readonly value: number;
  readonly unit: string;
  /** Human-readable target, e.g. `≥ 10000`; empty when there is none. */
  readonly target?: string;
  /** true/false when judged against a target; undefined when informative only. */
  readonly ok?: boolean;
  readonly note?: string;
}

export interface Section {
  readonly title: string;
  readonly method: string;
  readonly rows: readonly Row[];
}

export interface BenchOptions {
  readonly full: boolean;
  readonly runs: number;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
