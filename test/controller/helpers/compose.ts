/** Compose sources for tests. */

export const digestOf = (n: number): string => n.toString(16).padStart(2, '0').repeat(32);

/** A one-service stack whose content (and so its digest) varies with `n`. */
export function webCompose(n = 1): string {
  return `services:
  web:
    image: registry.local/acme/web@sha256:${digestOf(n)}
    environment:
      REV: "${n}"
    ports:
      - "8080:80"
    restart: unless-stopped
`;
}
