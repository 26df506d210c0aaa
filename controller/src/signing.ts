/**
 * Command signing keys (DESIGN §5). The online signing key (`<certs>/signing/<kid>.key`, PKCS#8 PEM)
 * signs every command; an optional approver key signs approvals of critical changes. The signers are
 * created once and reused: each command is signed once, and retries resend the same bytes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { certsLayout } from '../../certs/src/layout.js';
import { createSigner, privateKeyFromPem, type Signer } from '../../protocol/src/index.js';
import { ApiError } from './errors.js';

export interface SigningKeys {
  readonly signer: Signer;
  readonly approver?: Signer;
}

export function loadSigner(file: string, kid: string): Signer {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ApiError(
      'signing-key',
      `cannot read signing key ${file}: ${(err as NodeJS.ErrnoException).code}`,
    );
  }
  try {
    return createSigner(kid, privateKeyFromPem(pem).seed);
  } catch (err) {
    throw new ApiError('signing-key', `${file} is not an Ed25519 private key: ${(err as Error).message}`);
  }
}

/** The kid of the only key in `<certs>/signing/`, when `kid` is not configured. */
function soleSigningKid(certsDir: string): string {
  const dir = dirname(certsLayout(certsDir).signingKey('_'));
  let kids: string[] = [];
  try {
    kids = readdirSync(dir)
      .filter((f) => f.endsWith('.key'))
      .map((f) => basename(f, '.key'));
  } catch {
    // reported below
  }
  if (kids.length !== 1) {
    throw new ApiError(
      'signing-key',
      kids.length === 0
        ? `no signing key in ${dir} (run \`outpost certs\` or set signing.keyFile)`
        : `several signing keys in ${dir} (${kids.join(', ')}): set signing.kid`,
    );
  }
  return kids[0]!;
}

export interface SigningConfig {
  readonly kid?: string;
  readonly keyFile?: string;
}

export function loadSigningKeys(
  certsDir: string,
  signing: SigningConfig,
  approver: SigningConfig = {},
): SigningKeys {
  const layout = certsLayout(certsDir);
  const kid = signing.kid ?? soleSigningKid(certsDir);
  const signer = loadSigner(signing.keyFile ?? layout.signingKey(kid), kid);
  if (!approver.kid) return { signer };
  return { signer, approver: loadSigner(approver.keyFile ?? layout.signingKey(approver.kid), approver.kid) };
}
