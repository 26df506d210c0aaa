/**
 * Images: find locally, never re-pull, pull from the site registry mirror when missing.
 *
 * - An image already present is never pulled again ([RT-IMG-1]): presence is checked with
 *   `image.inspect()` first; for a digest reference the image's RepoDigests must carry that digest
 *   (an image `docker import`ed or built locally has none, so only tag references can match those).
 * - A missing image is pulled from `mirror` (e.g. `127.0.0.1:5000`) when one is configured: the
 *   reference's registry host is replaced by the mirror (`registry.acme/x/y@sha256:…` →
 *   `127.0.0.1:5000/x/y@sha256:…`; a reference without a host gets the mirror prepended). Without a
 *   mirror the reference is pulled as it is. The pulled image stays known under the mirror's name;
 *   lookups try the original reference first, then the mirror's.
 * - Pull progress is streamed and dropped line by line (nothing accumulates: 64 MB budget); any
 *   error, a stream that ends without the image, or the pull timeout is `image-unavailable`.
 */
import type Dockerode from 'dockerode';
import type { Logger } from 'pino';
import { RuntimeError, statusOf } from './errors.js';

const DIGEST_SEP = '@sha256:';

/** Splits a reference into the repository (with host) and its `:tag` or `@sha256:…` suffix. */
export function splitRef(ref: string): { repo: string; suffix: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { repo: ref.slice(0, at), suffix: ref.slice(at) };
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) return { repo: ref.slice(0, colon), suffix: ref.slice(colon) };
  return { repo: ref, suffix: '' };
}

/** The reference rewritten to pull through `mirror` (`host[:port]`). */
export function mirrorRef(ref: string, mirror: string): string {
  const { repo, suffix } = splitRef(ref);
  const slash = repo.indexOf('/');
  const first = slash >= 0 ? repo.slice(0, slash) : '';
  const hasHost = slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost');
  const path = hasHost ? repo.slice(slash + 1) : repo;
  return `${mirror.replace(/\/+$/, '')}/${path}${suffix}`;
}

export interface LocalImage {
  /** The local reference that resolves to it (the original or the mirror's). */
  readonly ref: string;
  /** Image id, `sha256:…`. */
  readonly id: string;
}

async function inspectRef(docker: Dockerode, ref: string): Promise<LocalImage | undefined> {
  try {
    const info = await docker.getImage(ref).inspect();
    const d = ref.indexOf(DIGEST_SEP);
    if (d >= 0) {
      const digest = ref.slice(d + 1);
      if (!(info.RepoDigests ?? []).some((r) => r.endsWith(`@${digest}`))) return undefined;
    }
    return { ref, id: info.Id };
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw err;
  }
}

export class Images {
  constructor(
    private readonly docker: Dockerode,
    private readonly log: Logger,
    private readonly mirror: string | undefined,
    private readonly pullTimeoutMs: number,
  ) {}

  /** The present image for `ref` (under its own name or the mirror's), or undefined. Never pulls. */
  async find(ref: string): Promise<LocalImage | undefined> {
    const own = await inspectRef(this.docker, ref);
    if (own || !this.mirror) return own;
    return inspectRef(this.docker, mirrorRef(ref, this.mirror));
  }

  /** Makes `ref` present: returns it at once when present, else pulls (from the mirror if configured). */
  async ensure(ref: string): Promise<LocalImage> {
    const have = await this.find(ref);
    if (have) return have;
    const from = this.mirror ? mirrorRef(ref, this.mirror) : ref;
    const started = Date.now();
    this.log.info({ ref, from }, 'pulling image');
    try {
      await this.pull(from);
    } catch (err) {
      throw new RuntimeError('image-unavailable', `pull ${from}: ${(err as Error).message}`.slice(0, 240));
    }
    const got = await this.find(ref);
    if (!got) throw new RuntimeError('image-unavailable', `pull ${from} finished without the image`);
    this.log.info({ ref, from, ms: Date.now() - started }, 'pulled image');
    return got;
  }

  private async pull(from: string): Promise<void> {
    const stream = (await this.docker.createImage({ fromImage: from })) as NodeJS.ReadableStream & {
      destroy?: (err?: Error) => void;
    };
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      let failure: string | undefined;
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else if (failure) reject(new Error(failure));
        else resolve();
      };
      const timer = setTimeout(() => {
        finish(new Error(`timed out after ${this.pullTimeoutMs} ms`));
        stream.destroy?.();
      }, this.pullTimeoutMs);
      const line = (l: string) => {
        if (!l.trim()) return;
        try {
          const m = JSON.parse(l) as { error?: unknown; errorDetail?: { message?: unknown } };
          const e = m.errorDetail?.message ?? m.error;
          if (typeof e === 'string') failure = e.slice(0, 200);
        } catch {
          // progress lines we cannot read are dropped
        }
      };
      stream.on('data', (chunk: Buffer | string) => {
        buf += chunk.toString();
        let nl = buf.indexOf('\n');
        while (nl >= 0) {
          line(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          nl = buf.indexOf('\n');
        }
        if (buf.length > 64 * 1024) buf = '';
      });
      stream.on('end', () => {
        line(buf);
        finish();
      });
      stream.on('close', () => finish());
      stream.on('error', (err: Error) => finish(err));
    });
  }
}
