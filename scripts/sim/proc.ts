/** Child-process plumbing shared by the simulator: request/answer over IPC, stopping, /proc CPU time. */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Epoch milliseconds with sub-millisecond resolution, comparable across processes. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

/** Extra node flags for the simulator's children, e.g. SIM_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
export function nodeFlags(): string[] {
  return (process.env['SIM_NODE_FLAGS'] ?? '').split(/\s+/).filter(Boolean);
}

/** Requests carry an `id`; the child answers with a message carrying the same `id`. */
export class Rpc {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (m: unknown) => void; reject: (e: Error) => void }>();

  constructor(
    private readonly child: ChildProcess,
    private readonly name: string,
  ) {
    child.on('message', (m: { id?: number; op?: string; message?: string }) => {
      if (typeof m?.id !== 'number') return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.op === 'error') p.reject(new Error(`${name}: ${m.message}`));
      else p.resolve(m);
    });
    child.once('exit', (code, signal) => {
      for (const p of this.pending.values()) {
        p.reject(new Error(`${name} exited (code ${code}, signal ${signal}) before answering`));
      }
      this.pending.clear();
    });
  }

  call<T>(msg: Record<string, unknown>, timeoutMs = 600_000): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.name}: no answer to ${String(msg['op'])} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ ...msg, id });
    });
  }
}

/** Resolves with the first message satisfying `pick` (rejects on `error` messages or exit). */
export function firstMessage<T>(
  child: ChildProcess,
  name: string,
  pick: (m: { op?: string; message?: string }) => boolean,
  timeoutMs: number,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${name} did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (m: { op?: string; message?: string }): void => {
      if (m?.op === 'error') {
        cleanup();
        reject(new Error(`${name}: ${m.message}`));
      } else if (pick(m)) {
        cleanup();
        resolve(m as T);
      }
    };
    const onExit = (code: number | null, signal: string | null): void => {
      cleanup();
      reject(new Error(`${name} exited (code ${code}, signal ${signal})`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/** Waits for the child to exit; SIGKILL after `graceMs`. */
export async function waitExit(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await done;
  clearTimeout(timer);
}

/** CPU time (user + system) a process has used so far, in seconds (from /proc; 0 if it is gone). */
export function procCpuSec(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return 0;
  }
}
