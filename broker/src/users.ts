/**
 * Password users of the broker: SCADA clients without a certificate (over TLS), and every role on a
 * loopback plain listener in development. One small JSON file (default `<certs>/users.json`, 0600):
 *
 *   { "v": 1, "users": { "scada:hmi1": { "role": "scada", "name": "hmi1", "salt": b64, "hash": b64,
 *                                        "N": 16384, "r": 8, "p": 1, "created": ISO } } }
 *
 * The MQTT username is `role:name`. Hashes are scrypt (node:crypto) with a 16-byte random salt;
 * verification is constant-time and does the same work for unknown users (no user enumeration by
 * timing). Writes go through a temporary file and a rename; two writers at once may lose one update.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { BrokerError } from './errors.js';
import { formatUsername, isRole, NAME_PATTERN, ROLES, type Role } from './identity.js';

const KEYLEN = 32;
export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 } as const;
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

const UserRecordSchema = Type.Object(
  {
    role: Type.Union(ROLES.map((r) => Type.Literal(r))),
    name: Type.String({ pattern: NAME_PATTERN.source }),
    salt: Type.String({ maxLength: 64 }),
    hash: Type.String({ maxLength: 128 }),
    N: Type.Integer({ minimum: 1024, maximum: 1 << 20 }),
    r: Type.Integer({ minimum: 1, maximum: 32 }),
    p: Type.Integer({ minimum: 1, maximum: 16 }),
    created: Type.String({ maxLength: 40 }),
  },
  { additionalProperties: false },
);
const UsersFileSchema = Type.Object(
  { v: Type.Literal(1), users: Type.Record(Type.String(), UserRecordSchema) },
  { additionalProperties: false },
);
export type UserRecord = Static<typeof UserRecordSchema>;
type UsersFile = Static<typeof UsersFileSchema>;

function scryptAsync(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEYLEN, { ...opts, maxmem: 256 * opts.N! * opts.r! + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

function parseFile(text: string, path: string): UsersFile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new BrokerError('users-file', `${path}: not JSON (${(err as Error).message})`);
  }
  if (!Value.Check(UsersFileSchema, data)) {
    const first = [...Value.Errors(UsersFileSchema, data)][0];
    throw new BrokerError('users-file', `${path}: ${first?.path || '/'} ${first?.message ?? 'invalid'}`);
  }
  for (const [username, rec] of Object.entries(data.users)) {
    if (username !== formatUsername(rec.role, rec.name)) {
      throw new BrokerError('users-file', `${path}: key ${JSON.stringify(username)} is not role:name`);
    }
  }
  return data;
}

async function readUsersFile(path: string): Promise<UsersFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { v: 1, users: {} };
    throw new BrokerError('users-file', `${path}: ${(err as Error).message}`);
  }
  return parseFile(text, path);
}

async function writeUsersFile(path: string, file: UsersFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

function checkUser(role: unknown, name: unknown): asserts role is Role {
  if (!isRole(role)) throw new BrokerError('invalid-user', `unknown role ${JSON.stringify(role)}`);
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new BrokerError('invalid-user', `user name must match ${NAME_PATTERN.source}`);
  }
}

export interface AddUserOptions {
  readonly role: Role;
  readonly name: string;
  readonly password: string;
  /** Replace the password of an existing user. */
  readonly force?: boolean;
  /** scrypt cost (tests lower N to stay fast). */
  readonly scrypt?: { N: number; r: number; p: number };
}

/** Adds (or with `force`, replaces) a password user. Returns the MQTT username `role:name`. */
export async function addUser(path: string, opts: AddUserOptions): Promise<string> {
  checkUser(opts.role, opts.name);
  if (
    typeof opts.password !== 'string' ||
    opts.password.length < MIN_PASSWORD_LENGTH ||
    opts.password.length > MAX_PASSWORD_LENGTH
  ) {
    throw new BrokerError(
      'invalid-user',
      `password must be ${MIN_PASSWORD_LENGTH}..${MAX_PASSWORD_LENGTH} characters`,
    );
  }
  const file = await readUsersFile(path);
  const username = formatUsername(opts.role, opts.name);
  if (file.users[username] && !opts.force) {
    throw new BrokerError('user-exists', `user ${username} already exists`);
  }
  const params = opts.scrypt ?? SCRYPT_DEFAULTS;
  const salt = randomBytes(16);
  const hash = await scryptAsync(opts.password, salt, params);
  file.users[username] = {
    role: opts.role,
    name: opts.name,
    salt: salt.toString('base64'),
    hash: hash.toString('base64'),
    ...params,
    created: new Date().toISOString(),
  };
  await writeUsersFile(path, file);
  return username;
}

/** Removes a user; returns false when there was none. */
export async function removeUser(path: string, role: Role, name: string): Promise<boolean> {
  checkUser(role, name);
  const file = await readUsersFile(path);
  const username = formatUsername(role, name);
  if (!file.users[username]) return false;
  delete file.users[username];
  await writeUsersFile(path, file);
  return true;
}

export async function listUsers(path: string): Promise<{ role: Role; name: string }[]> {
  const file = await readUsersFile(path);
  return Object.values(file.users).map((u) => ({ role: u.role, name: u.name }));
}

/** The broker's read-only view of the user file; `reload()` re-reads it (SIGHUP). */
export class UserStore {
  #users: Map<string, UserRecord>;
  readonly #path: string | undefined;
  readonly #dummySalt = randomBytes(16);

  private constructor(path: string | undefined, users: Map<string, UserRecord>) {
    this.#path = path;
    this.#users = users;
  }

  /** An absent file is an empty store; a malformed one is a `users-file` error. */
  static async open(path: string | undefined): Promise<UserStore> {
    const file = path ? await readUsersFile(path) : { v: 1 as const, users: {} };
    return new UserStore(path, new Map(Object.entries(file.users)));
  }

  get size(): number {
    return this.#users.size;
  }

  async reload(): Promise<void> {
    if (!this.#path) return;
    const file = await readUsersFile(this.#path);
    this.#users = new Map(Object.entries(file.users));
  }

  /** The identity for `role:name` + password, or undefined (same work either way). */
  async verify(
    username: string,
    password: Buffer | string,
  ): Promise<{ role: Role; name: string } | undefined> {
    const rec = this.#users.get(username);
    const pw = typeof password === 'string' ? password : password.toString('utf8');
    if (pw.length > MAX_PASSWORD_LENGTH) return undefined;
    const params = rec ?? SCRYPT_DEFAULTS;
    const salt = rec ? Buffer.from(rec.salt, 'base64') : this.#dummySalt;
    const got = await scryptAsync(pw, salt, { N: params.N, r: params.r, p: params.p });
    const want = rec ? Buffer.from(rec.hash, 'base64') : Buffer.alloc(KEYLEN);
    const same = want.length === got.length && timingSafeEqual(want, got);
    return rec && same ? { role: rec.role, name: rec.name } : undefined;
  }
}
