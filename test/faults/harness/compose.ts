/** Compose files for the fault scenarios: unique content per revision, optionally padded. */

/** A Compose file whose content is unique per (stack, n): `services` one container each. */
export function compose(n: number, services: readonly string[] = ['web', 'db'], pad = 0): string {
  const digest = (s: string) =>
    Buffer.from(`${s}-${n}`.padEnd(32, '.').slice(0, 32)).toString('hex').padEnd(64, '0');
  const lines = ['services:'];
  for (const s of services) {
    lines.push(`  ${s}:`);
    lines.push(`    image: registry.local/outpost/${s}@sha256:${digest(s)}`);
    lines.push('    environment:');
    lines.push(`      REV: "${n}"`);
    if (pad > 0) lines.push(`      PAD: "${padding(n, pad)}"`);
  }
  return `${lines.join('\n')}\n`;
}

/** `bytes` of incompressible text, reproducible per n (so a spec's size does not shrink under deflate). */
function padding(n: number, bytes: number): string {
  let x = (n * 2654435761) >>> 0 || 1;
  let s = '';
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  while (s.length < bytes) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    s += alphabet[x % alphabet.length];
  }
  return s;
}
