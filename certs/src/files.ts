/** File helpers with the permissions the layout promises: private keys 0600, folders 0700. */
import { randomBytes } from 'node:crypto';
import { access, chmod, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Creates `dir` (and parents) 0700; tightens an existing one to 0700. */
export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/**
 * Writes `data` through a temporary file and a rename, so a reader never sees half a file and a
 * crash never leaves a truncated key. `mode` applies from creation (0600 for private keys).
 */
export async function writeAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  await ensureDir(dirname(path));
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await chmod(tmp, mode);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

export function writePrivate(path: string, data: string | Uint8Array): Promise<void> {
  return writeAtomic(path, data, 0o600);
}
