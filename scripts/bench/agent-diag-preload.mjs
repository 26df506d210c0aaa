// Preloaded into the agent by agent-diag.ts (`node --import`): on SIGUSR2 writes the process's own view
// of its memory to $OUTPOST_DIAG_OUT (JSON): process.memoryUsage(), V8 heap spaces and code statistics,
// the CommonJS modules loaded (require.cache) and the built-in modules loaded (process.moduleLoadList).
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import v8 from 'node:v8';

const require = createRequire(import.meta.url);
process.on('SIGUSR2', () => {
  const out = process.env.OUTPOST_DIAG_OUT;
  if (!out) return;
  const spaces = Object.fromEntries(
    v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]),
  );
  writeFileSync(
    out,
    JSON.stringify({
      memoryUsage: process.memoryUsage(),
      heap: v8.getHeapStatistics(),
      code: v8.getHeapCodeStatistics(),
      spaces,
      cjs: Object.keys(require.cache),
      builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
    }),
  );
});
